"""The pyinfra inventory of a running lab: `<labdir>/inventory.py`, literal data only."""

from __future__ import annotations

import pprint

from lab.config import MACHINES, Lab
from lab.overrides import OVERRIDES

HEADER = '''"""pyinfra inventory of the local lab {name!r}; `python -m lab up` writes it.

Use: pyinfra {path} deploy.py
"""
'''


def host_data(lab: Lab, machine: str, ip: str) -> dict:
    data = {
        "ssh_hostname": ip,
        "ssh_port": 22,
        "ssh_user": "root",
        "ssh_key": str(lab.key),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        # The base role's admin user gets the lab key too, so its key login can be checked.
        "base_admin_ssh_keys": [lab.key.with_suffix(".pub").read_text().strip()],
    }
    data.update(OVERRIDES.get(MACHINES[machine].group, {}))
    return data


def write(lab: Lab, ips: dict[str, str]) -> None:
    """Write the inventory for the machines in `ips` (machine name -> address)."""
    groups: dict[str, list] = {}
    for machine, ip in sorted(ips.items()):
        host = (lab.machine_id(machine), host_data(lab, machine, ip))
        groups.setdefault(MACHINES[machine].group, []).append(host)
    from lab import vm  # the lab's qemu VMs (lab/vm.py), when running, are listed too

    for group, hosts in vm.inventory_hosts(lab).items():
        groups.setdefault(group, []).extend(hosts)
    text = HEADER.format(name=lab.name, path=lab.inventory)
    for group in sorted({k.group for k in MACHINES.values()}):
        text += f"\n{group} = {pprint.pformat(groups.get(group, []), width=96)}\n"
    tmp = lab.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(lab.inventory)
