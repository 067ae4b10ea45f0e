"""The live pyinfra inventory of the fleet, so plain pyinfra works too:

    pyinfra inventories/fleet.py deploy/pyinfra_school.py          # from a checkout
    pyinfra schoolctl.inventories.fleet.hosts DEPLOY_FILE           # from the installed package

Reads the schools folder (SCHOOLCTL_SCHOOLS_DIR, default ./schools). Groups: `schools` (every school
server, named by school id), `bigbluebutton` (a school's own BBB host, `<id>-bbb`), and `hosts`
(both). Each host carries `school_id`; a BBB host also `schoolctl_role: bigbluebutton`. A `lab:NAME`
server gets the lab host's address and key when it is running.
"""

from schoolctl.config.loader import load
from schoolctl.connect import pyinfra_data

_config = load()
schools = [(s.id, {**pyinfra_data(s.server, strict=False), "school_id": s.id}) for s in _config.schools.values()]
bigbluebutton = [
    (f"{s.id}-bbb", {**pyinfra_data(bbb.server, strict=False), "school_id": s.id, "schoolctl_role": "bigbluebutton"})
    for s in _config.schools.values()
    if (bbb := s.services.bigbluebutton) is not None and bbb.server is not None and not bbb.pool
]
hosts = schools + bigbluebutton
