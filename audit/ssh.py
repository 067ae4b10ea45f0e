"""SSH controls: what `sshd -T` (the server's effective configuration) says about passwords, root,
keys, authentication attempts and forwarding."""

from __future__ import annotations

from schoolctl.audit.catalogue import Context, Outcome, control, evidence, parse_kv, verdict

SSHD = evidence("sshd -T")


def sshd(ctx: Context) -> dict[str, str]:
    res = ctx.run(SSHD)
    if res.rc != 0:
        raise RuntimeError(f"sshd -T failed: {res.stderr.strip()[-300:]}")
    return parse_kv(res.stdout)


def _sshd_values(ctx: Context, keys: list[str]) -> str:
    conf = sshd(ctx)
    return ", ".join(f"{k} {conf.get(k, '(unset)')}" for k in keys)


@control("HOST-SSH-NO-PASSWORD", "host", "SSH accepts no passwords",
         "Password logins can be guessed or phished; keys cannot be brute-forced from the network.",
         ["32"], "high", titles={"ca": "SSH no accepta contrasenyes", "es": "SSH no acepta contraseñas"})
def ssh_no_password(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    ok = conf.get("passwordauthentication") == "no" and conf.get("kbdinteractiveauthentication") == "no"
    return verdict(ok, "sshd -T: " + _sshd_values(ctx, ["passwordauthentication", "kbdinteractiveauthentication"]),
                   "passwordauthentication no, kbdinteractiveauthentication no")


@control("HOST-SSH-ROOT-NO-PASSWORD", "host", "root cannot log in over SSH with a password",
         "root is the first account attackers try; if it logs in at all it must be with a key.",
         ["32"], "high", titles={"ca": "root no entra per SSH amb contrasenya",
                                 "es": "root no entra por SSH con contraseña"})
def ssh_root(ctx: Context) -> Outcome:
    value = sshd(ctx).get("permitrootlogin", "(unset)")
    return verdict(value in ("no", "prohibit-password", "without-password", "forced-commands-only"),
                   f"sshd -T: permitrootlogin {value}", "permitrootlogin no or prohibit-password")


@control("HOST-SSH-KEY-ONLY", "host", "SSH authentication is by public key only",
         "Only technicians holding a registered key may log in to a server holding pupils' data.",
         ["32"], "high", titles={"ca": "SSH només amb clau pública", "es": "SSH solo con clave pública"})
def ssh_key_only(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    methods = conf.get("authenticationmethods", "any")
    ok = methods == "publickey" and conf.get("pubkeyauthentication") == "yes"
    return verdict(ok, "sshd -T: " + _sshd_values(ctx, ["authenticationmethods", "pubkeyauthentication"]),
                   "authenticationmethods publickey, pubkeyauthentication yes")


@control("HOST-SSH-NO-EMPTY-PASSWORDS", "host", "SSH refuses accounts with empty passwords",
         "An account without a password would be open to anyone who can reach the server.",
         ["32"], "high", titles={"ca": "SSH rebutja contrasenyes buides", "es": "SSH rechaza contraseñas vacías"})
def ssh_empty(ctx: Context) -> Outcome:
    value = sshd(ctx).get("permitemptypasswords", "(unset)")
    return verdict(value == "no", f"sshd -T: permitemptypasswords {value}", "permitemptypasswords no")


MAX_AUTH_TRIES = 3  # DevSec ssh-baseline and Lynis SSH-7408


@control("HOST-SSH-MAX-AUTH-TRIES", "host", f"SSH allows at most {MAX_AUTH_TRIES} authentication attempts",
         "Few attempts per connection slow down guessing and keep the logs readable.",
         ["32"], "medium", titles={"ca": "SSH limita els intents d'autenticació",
                                   "es": "SSH limita los intentos de autenticación"})
def ssh_max_auth(ctx: Context) -> Outcome:
    value = sshd(ctx).get("maxauthtries", "(unset)")
    ok = value.isdigit() and 0 < int(value) <= MAX_AUTH_TRIES
    return verdict(ok, f"sshd -T: maxauthtries {value}", f"maxauthtries <= {MAX_AUTH_TRIES} (DevSec/Lynis baseline)")


@control("HOST-SSH-NO-FORWARDING", "host", "SSH forwards no ports, agents, X11 or tunnels",
         "Forwarding turns the school server into a relay into (or out of) the school network.",
         ["32"], "medium", titles={"ca": "SSH sense reenviaments", "es": "SSH sin reenvíos"})
def ssh_forwarding(ctx: Context) -> Outcome:
    conf = sshd(ctx)
    keys = ["allowtcpforwarding", "allowagentforwarding", "x11forwarding", "permittunnel"]
    return verdict(all(conf.get(k) == "no" for k in keys), "sshd -T: " + _sshd_values(ctx, keys),
                   ", ".join(f"{k} no" for k in keys))
