"""Your machines, by group. Edit the addresses; settings live in group_data/*.py.

Run: ``pyinfra inventory.py deploy.py`` (add ``--dry`` to see the plan first).

pyinfra logs in as a user with passwordless sudo and runs every operation through ``sudo -n``
(``_sudo``), as cloud and RHEL hosts are set up: the VMs this deploy creates get that user from
cloud-init (``base_admin_user`` with ``base_admin_ssh_keys``). To log in as root instead, use
``{"ssh_user": "root"}`` without ``_sudo``; a sudo that asks for a password needs
``"_use_sudo_password": True`` as well (pyinfra then asks for it once).
"""

import runpy
from pathlib import Path

_GROUP_DATA = Path(__file__).parent / "group_data"

# The RHEL 9 family (or Debian 12) machine that owns the NVIDIA GPU and runs the VM. pyinfra logs
# in as `ssh gpu-host.example.lan` would (the User of your ~/.ssh/config, else your local user
# name): set "ssh_user" to the account with sudo there (the user made at install, cloud-user...).
hypervisors = [
    ("gpu-host.example.lan", {"_sudo": True}),
]


def _guest_login() -> dict:
    """The admin user cloud-init gives the VMs (base_admin_user of group_data/all.py), with sudo."""
    user = runpy.run_path(str(_GROUP_DATA / "all.py")).get("base_admin_user", "aicoder")
    return {"ssh_user": user, "_sudo": True}


def _vms_with_static_addresses() -> list[tuple[str, dict]]:
    """The VMs of group_data/hypervisors.py (guest_vm_vms) that have a static address: the
    hypervisor run creates them, and this run configures them as AI guests. They exist only to
    serve the models, so they reboot by themselves when the NVIDIA driver needs it and the run
    goes on (nvidia_driver_reboot; other guests only report REBOOT PENDING). Set it False here
    to reboot them yourself."""
    data = runpy.run_path(str(_GROUP_DATA / "hypervisors.py"))
    vms = data.get("guest_vm_vms", [])
    return [  # a malformed list is left to the deploy, which names what is wrong with it
        (vm["address"].split("/")[0], {**_guest_login(), "nvidia_driver_reboot": True})
        for vm in (vms if isinstance(vms, list) else [])
        if isinstance(vm, dict)
        and isinstance(vm.get("address"), str)
        and vm["address"] not in ("", "dhcp")
    ]


# The Debian 12 VMs that receive a GPU: those with a static address in group_data/hypervisors.py
# come by themselves; list a VM on DHCP here by the address your DHCP server reserves for its MAC.
ai_guests = _vms_with_static_addresses() or [
    ("ai-guest.example.lan", _guest_login()),
]

# This machine, where you run pyinfra: the deploy writes your editor's Continue config here
# (~/.continue/config.yaml, see the client_* settings). Remove it to leave your editor alone.
clients: list[tuple[str, dict]] = [
    ("@local", {}),
]
