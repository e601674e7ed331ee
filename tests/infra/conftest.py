"""The bridge from a pyinfra inventory to testinfra: the hosts these checks run against.

The inventory is `AICODER_INVENTORY` (default `<repo>/inventory.py`), loaded with pyinfra's own
loader, so the checks see the same hosts and host data (group_data/ included) as the deploy.

A test asks for the hosts of one group through a fixture named for it: `guest` (ai_guests),
`hypervisor` (hypervisors) or `any_host` (every host) is a testinfra host, and the test runs once
per host of the group, or is skipped when the group has none. `host_data` is that host's pyinfra
data as a dict.
"""

from __future__ import annotations

import functools
import getpass
import os
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[2]
GROUP_FIXTURES = {
    "guest": "ai_guests",
    "hypervisor": "hypervisors",
    "any_host": "all",
    "client": "clients",
}
CLIENTS = "clients"  # the control machine (@local): not a managed server, so not in "all"


@dataclass(frozen=True)
class Target:
    """One inventory host: its name, pyinfra data, and the testinfra spec to reach it."""

    name: str
    data: dict
    spec: str


def inventory_path() -> Path:
    return Path(os.environ.get("AICODER_INVENTORY", REPO / "inventory.py")).resolve()


def testinfra_spec(name: str, data: dict) -> str:
    """`paramiko://USER@HOST:PORT?...` from pyinfra's ssh_* data, with ssh's own defaults."""
    if name == "@local":
        return "local://"
    user = data.get("ssh_user") or getpass.getuser()
    hostname = data.get("ssh_hostname") or name
    if ":" in hostname:  # an IPv6 address
        hostname = f"[{hostname}]"
    password = data.get("ssh_password")
    auth = urllib.parse.quote(user, safe="")
    if password:
        auth += ":" + urllib.parse.quote(password, safe="")
    query = {}
    if data.get("ssh_key"):
        query["ssh_identity_file"] = str((REPO / os.path.expanduser(data["ssh_key"])).resolve())
    if data.get("_sudo"):  # as pyinfra does: the checks read root-only files
        query["sudo"] = "true"
    spec = f"paramiko://{auth}@{hostname}:{data.get('ssh_port') or 22}"
    return spec + ("?" + urllib.parse.urlencode(query) if query else "")


@functools.cache
def load_targets(path: Path) -> dict[str, list[Target]]:
    """Inventory group name -> its hosts, as pyinfra's CLI would load them (from the repo)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files

    # The loader executes the inventory and group_data files inside a pyinfra state.
    with ctx_state.use(State()):
        inventory = make_inventory_from_files(str(path), cwd=str(REPO))
    groups: dict[str, list[Target]] = {}
    for host in inventory:
        data = host.data.dict()
        target = Target(host.name, data, testinfra_spec(host.name, data))
        for group in {*host.groups, *(() if CLIENTS in host.groups else ("all",))}:
            groups.setdefault(group, []).append(target)
    return groups


def _explicitly_selected(config: pytest.Config) -> bool:
    """Whether the command line names tests/infra (or a file in it)."""
    here = Path(__file__).parent.resolve()
    for arg in config.invocation_params.args:
        path = (config.invocation_params.dir / str(arg).split("::")[0]).resolve()
        if path == here or here in path.parents:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, group in GROUP_FIXTURES.items():
        if fixture not in metafunc.fixturenames:
            continue
        path = inventory_path()
        reason = None
        if "AICODER_INVENTORY" not in os.environ and not _explicitly_selected(metafunc.config):
            # A broad `pytest` run must not reach out to the example hosts of inventory.py.
            reason = "checks real hosts: run `pytest tests/infra` or set AICODER_INVENTORY"
        elif not path.exists():
            reason = f"no inventory at {path} (set AICODER_INVENTORY)"
        targets = [] if reason else load_targets(path).get(group, [])
        if not targets and not reason:
            reason = f"no hosts in group {group!r} of {path}"
        if reason:
            metafunc.parametrize(
                fixture, [pytest.param(None, marks=pytest.mark.skip(reason=reason))], ids=[group]
            )
        else:
            metafunc.parametrize(fixture, targets, ids=[t.name for t in targets], indirect=True)


def _target(request: pytest.FixtureRequest) -> Target:
    for fixture in GROUP_FIXTURES:
        if fixture in request.fixturenames:
            return request.node.callspec.params[fixture]
    raise pytest.UsageError(f"host_data needs one of the fixtures {sorted(GROUP_FIXTURES)}")


def _connect(request: pytest.FixtureRequest):
    target: Target = request.param
    host = testinfra.get_host(target.spec)
    if str(target.data.get("ssh_strict_host_key_checking", "")).lower() in ("no", "false"):
        # The inventory accepts any host key (a lab machine): connect now, without
        # paramiko's warning about the unknown key.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unknown .* host key", UserWarning)
            host.backend.client  # noqa: B018  (connects)
    return host


@pytest.fixture
def guest(request: pytest.FixtureRequest):
    """A host of the ai_guests group (testinfra Host)."""
    return _connect(request)


@pytest.fixture
def hypervisor(request: pytest.FixtureRequest):
    """A host of the hypervisors group (testinfra Host)."""
    return _connect(request)


@pytest.fixture
def any_host(request: pytest.FixtureRequest):
    """Any host of the inventory (testinfra Host)."""
    return _connect(request)


@pytest.fixture(scope="session")
def inventory_hosts() -> dict[str, list[Target]]:
    """Every group of the inventory -> its hosts, for checks that read another group's data."""
    path = inventory_path()
    return load_targets(path) if path.exists() else {}


@pytest.fixture
def client(request: pytest.FixtureRequest):
    """A host of the clients group: the control machine the editor runs on (testinfra Host)."""
    return _connect(request)


@pytest.fixture
def host_data(request: pytest.FixtureRequest) -> dict:
    """The pyinfra host data of the host this test runs against."""
    return _target(request).data
