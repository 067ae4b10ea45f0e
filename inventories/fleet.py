"""The live pyinfra inventory of the fleet, so plain pyinfra works too:

    pyinfra inventories/fleet.py deploy/school.py     (from the project root)

Reads schools/ (or SCHOOLCTL_SCHOOLS_DIR); hosts are named by school id and carry `school_id`.
"""

from schoolctl.config.loader import load
from schoolctl.inventories.build import connection

_config = load()
schools = [(s.id, {**connection(s, strict=False), "school_id": s.id}) for s in _config.schools.values()]
