"""The shipped inventory.py logs in as a user has it: a non-root login goes through sudo."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files

ROOT = Path(__file__).resolve().parents[2]


def _hosts(folder: Path) -> dict:
    with ctx_state.use(State()):
        inventory = make_inventory_from_files(str(folder / "inventory.py"), cwd=str(folder))
    return {host.name: host for host in inventory}


def _assert_sudo_unless_root(hosts: dict) -> None:
    for name, host in hosts.items():
        if name.startswith("@"):  # @local: the client role writes the user's own files
            assert not host.data.get("_sudo"), name
        elif host.data.get("ssh_user") != "root":
            user = host.data.get("ssh_user")
            assert host.data.get("_sudo") is True, f"{name} logs in as {user!r} without sudo"


def test_shipped_inventory_uses_sudo_for_every_non_root_login():
    hosts = _hosts(ROOT)
    assert {"hypervisors", "ai_guests", "clients"} <= {g for h in hosts.values() for g in h.groups}
    _assert_sudo_unless_root(hosts)
    guest = next(h for h in hosts.values() if "ai_guests" in h.groups)
    assert guest.data.ssh_user == "aicoder"  # the user cloud-init gives the VM (base default)


def test_vms_from_group_data_log_in_as_the_configured_admin_user_with_sudo(tmp_path):
    """A VM with a static address joins ai_guests as base_admin_user (what its cloud-init made)."""
    shutil.copy(ROOT / "inventory.py", tmp_path)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('base_admin_user = "ops"\n')
    (tmp_path / "group_data" / "hypervisors.py").write_text(
        'guest_vm_vms = [{"name": "ai", "address": "192.0.2.50/24"},'
        ' {"name": "other", "address": "dhcp"}]\n'
    )
    hosts = _hosts(tmp_path)
    _assert_sudo_unless_root(hosts)
    guest = hosts["192.0.2.50"]
    assert "ai_guests" in guest.groups
    assert (guest.data.ssh_user, guest.data._sudo) == ("ops", True)
