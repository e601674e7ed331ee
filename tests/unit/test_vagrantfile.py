"""The Vagrantfile: valid for Vagrant, the two machines of the project with nested
virtualization on both providers, and its inventory giving pyinfra's @vagrant hosts the right
groups and settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api import State
from pyinfra.connectors import vagrant as vagrant_connector
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files

from roles.client.settings import ClientSettings
from roles.common.settings import classes_for_groups, validate_host

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
INVENTORY = ROOT / "vagrant" / "inventory.py"
TEXT = VAGRANTFILE.read_text()


# VirtualBox is not in Debian. Vagrant ships its VirtualBox provider but only validates its
# options once `VBoxManage --version` answers; this stand-in answers that and nothing else, so
# any other VBoxManage call fails the test instead of passing silently.
_VBOXMANAGE = """#!/bin/sh
[ "$1" = --version ] && echo 7.0.14r161095 && exit 0
echo "VBoxManage stand-in: only --version is answered (got: $*)" >&2
exit 1
"""


def _vagrant_validate(folder: Path, provider: str, scratch: Path) -> subprocess.CompletedProcess:
    """`vagrant validate` of the Vagrantfile in ``folder`` with ``provider`` as the default."""
    # Machine state goes to a scratch folder, not .vagrant/ in the repository.
    env = {
        **os.environ,
        "VAGRANT_DOTFILE_PATH": str(scratch / ".vagrant"),
        "VAGRANT_DEFAULT_PROVIDER": provider,
    }
    if provider == "virtualbox":
        vboxmanage = scratch / "bin" / "VBoxManage"
        vboxmanage.parent.mkdir(exist_ok=True)
        vboxmanage.write_text(_VBOXMANAGE)
        vboxmanage.chmod(0o755)
        env["PATH"] = f"{vboxmanage.parent}:{env['PATH']}"
    return subprocess.run(
        ["vagrant", "validate"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrant_validates_the_vagrantfile(tmp_path, provider):
    """Each provider's options are validated by that provider's own config class: libvirt's by
    Debian's vagrant-libvirt (scripts/bootstrap.sh installs it), VirtualBox's by Vagrant's
    built-in provider. Not checked: the `vb.customize` VBoxManage arguments (only VirtualBox
    reads them, at `vagrant up`)."""
    if not shutil.which("vagrant"):
        if not shutil.which("ruby"):
            pytest.skip("neither vagrant nor ruby is installed (scripts/bootstrap.sh)")
        done = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        pytest.skip("vagrant is not installed: checked the Ruby syntax only (scripts/bootstrap.sh)")
    done = _vagrant_validate(ROOT, provider, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


@pytest.mark.parametrize(
    ("provider", "option"), [("libvirt", "lv.nested"), ("virtualbox", "vb.memory")]
)
def test_vagrant_validate_refuses_a_misspelt_provider_option(tmp_path, provider, option):
    """The check above can fail: each provider refuses an option it does not have."""
    if not shutil.which("vagrant"):
        pytest.skip("vagrant is not installed (scripts/bootstrap.sh)")
    (tmp_path / "Vagrantfile").write_text(TEXT.replace(f"{option} =", f"{option}_typo ="))
    done = _vagrant_validate(tmp_path, provider, tmp_path)
    assert done.returncode != 0
    assert f"shouldn't exist: {option.split('.')[1]}_typo" in done.stdout + done.stderr


def _define(name: str) -> str:
    """The body of ``config.vm.define "<name>"`` up to the next define."""
    match = re.search(rf'config\.vm\.define "{name}".*?(?=config\.vm\.define|\Z)', TEXT, re.S)
    assert match, f"no machine {name!r} in the Vagrantfile"
    return match.group(0)


def test_an_el9_hypervisor_with_nested_virtualization_on_both_providers():
    assert 'ENV.fetch("AICODER_HYPERVISOR_BOX", "generic/rocky9")' in TEXT
    hypervisor = _define("hypervisor")
    assert "hv.vm.box = HYPERVISOR_BOX" in hypervisor
    assert "lv.nested = true" in hypervisor and 'lv.cpu_mode = "host-passthrough"' in hypervisor
    assert '"--nested-hw-virt", "on"' in hypervisor


def test_a_debian_12_guest_deployed_by_pyinfra_after_up_and_provision():
    assert 'ENV.fetch("AICODER_GUEST_BOX", "debian/bookworm64")' in TEXT
    guest = _define("guest")
    assert "guest.vm.box = GUEST_BOX" in guest
    assert "trigger.after [:up, :provision]" in guest
    assert '-y vagrant/inventory.py deploy.py"' in guest
    # Both machines must be up when the trigger runs (vagrant-libvirt starts them in parallel).
    assert 'ENV["VAGRANT_NO_PARALLEL"] = "yes"' in TEXT


def test_inventory_addresses_match_the_vagrantfile():
    inventory = INVENTORY.read_text()
    for name in ("HYPERVISOR_IP", "GUEST_IP"):
        in_vagrantfile = re.search(rf'^{name} = "([0-9.]+)"', TEXT, re.M).group(1)
        assert f'{name} = "{in_vagrantfile}"' in inventory


RUNNING = {"hypervisor", "guest"}  # what the fake `vagrant status` reports running


def _fake_vagrant(command: str, splitlines: bool = False):
    """`vagrant status --machine-readable` and `vagrant ssh-config` as Vagrant prints them."""
    if command.startswith("vagrant status"):
        out = "".join(
            f"1700000000,{m},state,{'running' if m in RUNNING else 'not_created'}\n"
            for m in ("hypervisor", "guest")
        )
    else:
        machine = command.split()[-1]
        port = {"hypervisor": 2222, "guest": 2200}[machine]
        out = (
            f"Host {machine}\n  HostName 127.0.0.1\n  User vagrant\n  Port {port}\n"
            f"  IdentityFile /repo/.vagrant/machines/{machine}/virtualbox/private_key\n\n"
        )
    return out.splitlines() if splitlines else out


class _InlineThread:
    """The connector asks Vagrant in threads; run them inline (this process mixes real
    threads and gevent, which the pyinfra CLI patches at start)."""

    def __init__(self, target, args):
        self.target, self.args = target, args

    def start(self):
        self.target(*self.args)

    def join(self):
        pass


def _load_inventory(monkeypatch, running=("hypervisor", "guest")) -> dict:
    """vagrant/inventory.py's hosts by name, with the fake Vagrant reporting ``running``."""
    monkeypatch.setattr(vagrant_connector.local, "shell", _fake_vagrant)
    monkeypatch.setattr(vagrant_connector, "Thread", _InlineThread)
    monkeypatch.setattr(vagrant_connector.get_vagrant_config, "cache", {})
    monkeypatch.setattr(sys.modules[__name__], "RUNNING", set(running))
    with ctx_state.use(State()):
        inventory = make_inventory_from_files(str(INVENTORY), cwd=str(ROOT))
    return {host.name: host for host in inventory}


def test_the_vagrant_connector_gives_each_machine_its_group_and_settings(monkeypatch):
    monkeypatch.delenv("AICODER_LAB_VAGRANT_DATA", raising=False)
    hosts = _load_inventory(monkeypatch)
    assert set(hosts) == {"@vagrant/hypervisor", "@vagrant/guest", "@local"}
    guest, hypervisor = hosts["@vagrant/guest"], hosts["@vagrant/hypervisor"]
    assert {"ai_guests", "@vagrant"} <= set(guest.groups)
    assert {"hypervisors", "@vagrant"} <= set(hypervisor.groups)
    assert "clients" in hosts["@local"].groups
    assert (guest.data.ssh_port, guest.data.ssh_user, guest.data._sudo) == (2200, "vagrant", True)
    # Behind the TLS front door the servers listen on loopback, where the door forwards (the
    # host-only address set here once made every request through the door fail).
    assert (
        "tabbyapi_host" not in guest.data.dict() and "ollama_bind_address" not in guest.data.dict()
    )
    assert guest.data.ollama_gpu is False and guest.data.tabbyapi_model_repo is None
    # Every host's settings are valid as the deploy will see them (group_data included).
    for host in hosts.values():
        validate_host(host, classes_for_groups(host.groups))
    assert ClientSettings.from_host(hosts["@local"]).api_host == "192.168.56.11"


def test_vagrant_up_guest_alone_deploys_the_guest_without_the_hypervisor(monkeypatch):
    """`vagrant up guest` runs the trigger with only the guest up: the connector refuses a
    machine that is not running, so the inventory lists only running ones (this failed the
    whole run before)."""
    monkeypatch.delenv("AICODER_LAB_VAGRANT_DATA", raising=False)
    hosts = _load_inventory(monkeypatch, running=["guest"])
    assert set(hosts) == {"@vagrant/guest", "@local"}
    assert "ai_guests" in hosts["@vagrant/guest"].groups


def test_lab_only_data_reaches_the_guest_only_when_the_lab_names_it(monkeypatch, tmp_path):
    data = tmp_path / "lab-data.json"
    data.write_text('{"nvidia_driver_lab_skip": true, "tabbyapi_model_repo": null}')
    monkeypatch.setenv("AICODER_LAB_VAGRANT_DATA", str(data))
    guest = _load_inventory(monkeypatch)["@vagrant/guest"]
    assert guest.data.nvidia_driver_lab_skip is True
    monkeypatch.delenv("AICODER_LAB_VAGRANT_DATA")
    guest = _load_inventory(monkeypatch)["@vagrant/guest"]
    assert "nvidia_driver_lab_skip" not in guest.data.dict()  # the role default (False) applies
