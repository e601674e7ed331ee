"""The entry point: ``pyinfra inventory.py deploy.py``.

Which roles run for which inventory group, in order; nothing else. Every role's settings are
validated for this host before any operation is planned, so bad input changes nothing.
"""

from pyinfra import host

from roles import (
    base,
    client,
    container_toolkit,
    docker,
    firewall,
    guest_vm,
    hf_tools,
    libvirt,
    nvidia_driver,
    ollama,
    planner,
    preflight,
    tabbyapi,
    vfio,
)
from roles.common.settings import classes_for_groups, validate_host

if "ai_guests" in host.groups:
    planner.apply_plan(host)  # fills the model settings the user left to the planner
validate_host(host, classes_for_groups(host.groups))

if "clients" not in host.groups:  # the control machine (@local) gets only the editor's config
    base.configure()
    # Before any service listens, so no port is ever open to all (SSH stays reachable: see role).
    firewall.configure()

if "hypervisors" in host.groups:
    # hypervisor roles are wired here (preflight, vfio, libvirt, guest VMs)
    preflight.check()  # read-only; refuses the host before anything changes
    vfio.configure()  # with vfio_reboot: reboots and checks here, before any VM starts
    if not vfio.only(host):  # vfio_only: GPU isolation alone (VMs managed elsewhere)
        libvirt.configure()
        guest_vm.configure()  # GPU VMs defined, not started, while a reboot is pending
    vfio.finish()  # REBOOT PENDING and the next command, last

if "ai_guests" in host.groups:
    nvidia_driver.install()
    docker.install()
    container_toolkit.install()
    hf_tools.install()
    tabbyapi.install()
    ollama.install()

if "clients" in host.groups:
    client.configure()
