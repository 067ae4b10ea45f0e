"""The live pyinfra inventory of the fleet, so plain pyinfra works too:

    pyinfra inventories/fleet.py deploy/pyinfra_school.py          # from a checkout
    pyinfra schoolctl.inventories.fleet.hosts DEPLOY_FILE           # from the installed package

Reads the schools folder (SCHOOLCTL_SCHOOLS_DIR, default ./schools). Groups: `schools` (every school
server, named by school id), `bigbluebutton` (a school's own BBB host, `<id>-bbb`; also as
`bigbluebutton_servers`, the exports' name), `hosts` (both), and one group of school servers per
district (`district_sant_marti`, as in `schoolctl inventory`). Each host carries `school_id`; a BBB
host also `schoolctl_role: bigbluebutton`. A `lab:NAME` server gets the lab host's address and key
when it is running; when it is not, a warning on stderr says so.
"""

import sys

from schoolctl.config.loader import load
from schoolctl.config.selection import district_group
from schoolctl.inventories.build import host_data

_config = load()
_notes: list[str] = []
schools = [(s.id, {**host_data(s.server, s.id, _notes), "school_id": s.id}) for s in _config.schools.values()]
bigbluebutton = [
    (f"{s.id}-bbb", {**host_data(bbb.server, f"{s.id}-bbb", _notes), "school_id": s.id,
                     "schoolctl_role": "bigbluebutton"})
    for s in _config.schools.values()
    if (bbb := s.services.bigbluebutton) is not None and bbb.server is not None and not bbb.pool
]
bigbluebutton_servers = bigbluebutton
hosts = schools + bigbluebutton
for _school in _config.schools.values():
    globals().setdefault(district_group(_school.district), []).append(_school.id)
for _note in _notes:
    print(_note, file=sys.stderr)
