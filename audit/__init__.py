"""schoolctl's privacy and security controls (testinfra checks + metadata).

To add a service's controls, write `audit/<service>.py` with functions decorated by
`audit.catalogue.control(...)`, each returning `passed/failed/verdict(observed, expected)`, and
declare the commands they read with `evidence(...)` (prefetched in one SSH round trip). Modules
are discovered; `schoolctl audit`, the reports and `pytest audit/` pick them up.
"""
