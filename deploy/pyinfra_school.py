"""A plain pyinfra deploy file: `pyinfra INVENTORY deploy/pyinfra_school.py` deploys the schools of
the inventory as `schoolctl deploy` does (the same layers, rounds and coarse operations).

Each host's data names its school (`school_id`) and, for a school's own BigBlueButton host,
`schoolctl_role: bigbluebutton`; `inventories/fleet.py` (or `schoolctl.inventories.fleet.schools`
from an installed package) is such an inventory:

    pyinfra inventories/fleet.py deploy/pyinfra_school.py        # from a checkout
    pyinfra schoolctl.inventories.fleet.hosts "$(python3 -c 'import importlib.util as u; \
        print(u.find_spec("schoolctl.deploy.pyinfra_school").origin)')"   # from the installed package

The schools folder, vault key and secrets come from SCHOOLCTL_SCHOOLS_DIR, SCHOOLCTL_VAULT_KEY_FILE
and SCHOOLCTL_SECRETS_DIR as for the CLI. pyinfra executes this file once per host, with absolute
imports only (it is not imported as a module; importing it outside pyinfra is an error).
"""

from pyinfra import host

from schoolctl.config.loader import load
from schoolctl.deploy.bbb_host import bbb_rounds
from schoolctl.deploy.school import school_deploy, school_rounds
from schoolctl.deploy.sites import build_site
from schoolctl.secrets import SecretStore

_school = load(only=[host.data.school_id]).select([host.data.school_id])[0]
_site = build_site(_school, SecretStore())
school_deploy(bbb_rounds(_site) if host.data.get("schoolctl_role") == "bigbluebutton" else school_rounds(_site))
