"""`schoolctl users import`: a school's roster (CSV) made true in its directory (OpenLDAP).

Modules: `roster` (the CSV), `directory` (the directory as it is, the plan, the LDIF), `ldap`
(reading and changing it on the server), `leavers` (the apps' delete commands), `classes` (each class
as a Moodle cohort and a shared Nextcloud folder), `importer` (one import).

Pure parts (no host): `parse_roster` (every row validated first, errors as `file:LINE: message`),
`make_uid`, `parse_ldif`/`read_directory`, `diff` (the plan) and `to_ldif` (the change set).
The remote part (`ldap`, over `schoolctl.connect.Session`) is one `ldapsearch` of everything and
one `ldapmodify` of the whole change set, both as root over ldapi:/// (SASL EXTERNAL) on the
school server, LDIF on stdin.

Who is who: a person is identified by their normalised name (given + family, ascii-folded,
lowercased, punctuation dropped), stored as `employeeNumber: p-<sha256 prefix>`; two rows with
the same normalised name are refused as a duplicate. The uid (`marta.puig`, `marta.puig2` on a
collision) is chosen once, when the person is first added, and never changes; a person's group,
role, email and the spelling of their name may change. A name change is a new person (the old
one is suspended, then deleted after the grace period).

Leavers: people missing from the roster are moved to `ou=suspended` at once (out of every
group, invisible to the apps, unable to log in, `description: suspended YYYY-MM-DD`); a later
import deletes them once `privacy.leaver_grace_days` have passed; a suspended person who is in
the roster again is restored (same uid, same password).

First login: every new person gets ppolicy's `pwdReset: TRUE`; Moodle (its own change page, bound as
cn=moodle) replaces the letter's password and slapd removes the flag; until then Nextcloud refuses it.
"""
