"""The entry point: ``pyinfra inventory.py deploy.py``.

Which roles run for which inventory group, in order; nothing else. Every role's settings are
validated for this host before any operation is planned, so bad input changes nothing.
"""

from pyinfra import host

from roles import base
from roles.common.settings import classes_for_groups, validate_host

validate_host(host, classes_for_groups(host.groups))

base.configure()

if "hypervisors" in host.groups:
    pass  # hypervisor roles are wired here (preflight, vfio, libvirt, guest VMs)

if "ai_guests" in host.groups:
    pass  # AI guest roles are wired here (nvidia_driver, docker, container_toolkit, ...)
