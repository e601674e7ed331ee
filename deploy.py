"""The entry point: ``pyinfra inventory.py deploy.py``.

Which roles run for which inventory group, in order; nothing else. Every role's settings are
validated for this host before any operation is planned, so bad input changes nothing.
"""

from pyinfra import host, state

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
    preflight,
    proxy,
    tabbyapi,
    vfio,
    vllm,
)
from roles.validate import validate_inventory

# Every host of the inventory at once (settings, the inventory itself, the host facts they are
# checked against; the planner fills the model settings first): one error names every bad key
# of every host before any host plans an operation.
validate_inventory(state)

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
    vllm.install()  # off by default (vllm_enabled)
    ollama.install()
    proxy.configure()  # the TLS front door of the model servers (proxy_plain_http: none)

if "clients" in host.groups:
    client.configure()
