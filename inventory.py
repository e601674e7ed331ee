"""Your machines, by group. Edit the addresses; settings live in group_data/*.py.

Run: ``pyinfra inventory.py deploy.py`` (add ``--dry`` to see the plan first).
"""

import runpy
from pathlib import Path

# The RHEL 9 family (or Debian 12) machine that owns the NVIDIA GPU and runs the VM.
hypervisors = [
    ("gpu-host.example.lan", {"ssh_user": "root"}),
]


def _vms_with_static_addresses() -> list[tuple[str, dict]]:
    """The VMs of group_data/hypervisors.py (guest_vm_vms) that have a static address: the
    hypervisor run creates them, and this run configures them as AI guests. They exist only to
    serve the models, so they reboot by themselves when the NVIDIA driver needs it and the run
    goes on (nvidia_driver_reboot; other guests only report REBOOT PENDING). Set it False here
    to reboot them yourself."""
    data = runpy.run_path(str(Path(__file__).parent / "group_data" / "hypervisors.py"))
    return [
        (vm["address"].split("/")[0], {"ssh_user": "aicoder", "nvidia_driver_reboot": True})
        for vm in data.get("guest_vm_vms", [])
        if vm.get("address", "dhcp") != "dhcp"
    ]


# The Debian 12 VMs that receive a GPU: those with a static address in group_data/hypervisors.py
# come by themselves; list a VM on DHCP here by the address your DHCP server reserves for its MAC.
ai_guests = _vms_with_static_addresses() or [
    ("ai-guest.example.lan", {"ssh_user": "aicoder"}),
]

# This machine, where you run pyinfra: the deploy writes your editor's Continue config here
# (~/.continue/config.yaml, see the client_* settings). Remove it to leave your editor alone.
clients: list[tuple[str, dict]] = [
    ("@local", {}),
]
