"""A read-only host report: ``pyinfra inventory.py report.py`` (changes nothing).

For each hypervisor: IOMMU groups with classes and drivers, the boot GPU, kernel arguments and
/etc/kernel/cmdline, curl, the network (NetworkManager profiles, the uplink), SELinux, firewalld
zones, and what deploy.py would do with them. Run it before the first deploy.
"""

from roles import report

print(report.text() + "\n")  # noqa: T201 - the report is this file's output
