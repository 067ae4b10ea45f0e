"""The lab: real Debian 13 school servers on this machine (systemd-nspawn + network namespaces).

Small, stable API::

    lab = Lab()                      # state in $SCHOOLCTL_LAB_DIR or /var/lib/schoolctl/lab
    hosts = lab.up(["demo"])         # -> list[LabHost]; waits until systemd runs
    svc = lab.services(acme=True)    # -> CityServices (proxy, ACME, DNS, mirror URLs)
    lab.register_domain("demo.lab.test", hosts[0].address)
    lab.down()                       # everything gone
"""

from schoolctl.errors import LabError
from schoolctl.lab.lab import Lab, LabHost
from schoolctl.lab.services import CityServices

__all__ = ["CityServices", "Lab", "LabError", "LabHost"]
