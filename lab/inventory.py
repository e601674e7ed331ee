"""The pyinfra inventory of a running lab: `<labdir>/inventory.py`, literal data only."""

from __future__ import annotations

import pprint

from lab import admin, mirrors
from lab.config import MACHINES, Lab
from lab.overrides import MACHINE_OVERRIDES, OVERRIDES, TABBYAPI_RUNNABLE

HEADER = '''"""pyinfra inventory of the local lab {name!r}; `python -m lab up` writes it.

Use: pyinfra {path} deploy.py
"""
'''


def connection(lab: Lab, hostname: str, port: int = 22) -> dict:
    """How the deploy logs in to a lab machine: as a user's inventory does, as the admin user
    (lab/admin.py) with sudo, never as root."""
    return {
        "ssh_hostname": hostname,
        "ssh_port": port,
        "ssh_user": admin.USER,
        "_sudo": True,
        "ssh_key": str(lab.key),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        # The base role manages the user the deploy logs in as: with the same key, so a deploy
        # that rewrites its authorized_keys keeps its own login.
        "base_admin_ssh_keys": [lab.key.with_suffix(".pub").read_text().strip()],
    }


def host_data(lab: Lab, machine: str, ip: str) -> dict:
    data = connection(lab, ip)
    data.update(OVERRIDES.get(MACHINES[machine].group or "", {}))
    data.update(MACHINE_OVERRIDES.get(machine, {}))
    url = mirrors.tabbyapi_url(lab) if MACHINES[machine].group == "ai_guests" else None
    if url:
        data.update(TABBYAPI_RUNNABLE, tabbyapi_git_url=url)
    return data


def write(lab: Lab, ips: dict[str, str]) -> None:
    """Write the inventory for the machines in `ips` (machine name -> address)."""
    groups: dict[str, list] = {}
    for machine, ip in sorted(ips.items()):
        group = MACHINES[machine].group
        if group:  # a machine without a group (vagrant) is not deployed by the lab's inventory
            host = (lab.machine_id(machine), host_data(lab, machine, ip))
            groups.setdefault(group, []).append(host)
    from lab import vm  # the lab's qemu VMs (lab/vm.py), when running, are listed too

    for group, hosts in vm.inventory_hosts(lab).items():
        groups.setdefault(group, []).extend(hosts)
    text = HEADER.format(name=lab.name, path=lab.inventory)
    for group in sorted({k.group for k in MACHINES.values() if k.group}):
        text += f"\n{group} = {pprint.pformat(groups.get(group, []), width=96)}\n"
    tmp = lab.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(lab.inventory)
