"""The deploy's one read per host (roles/common/prefetch.py): the batch command, its answer, and
when a read is served from it."""

from __future__ import annotations

import shlex
import subprocess
from types import SimpleNamespace

from roles.common import host_state, prefetch
from roles.common.host_state import HostState
from roles.common.memo import host_memo
from roles.firewall.facts import FirewallHostNetwork


def _run(command) -> list[str]:
    text = command.get_raw_value() if hasattr(command, "get_raw_value") else command
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True).stdout.splitlines()


def test_each_command_answers_on_its_own_even_when_one_fails_or_exits():
    batch = prefetch.Batch()
    commands = ("echo one; echo two", "echo partial; exit 3", "echo three")
    answers = batch.process(_run(batch.command(commands)))
    assert answers == {0: (0, ["one", "two"]), 1: (3, ["partial"]), 2: (0, ["three"])}


def test_a_real_host_state_read_in_a_batch_parses_as_alone(tmp_path):
    path = tmp_path / "a file"
    path.write_text("x\n")
    spec = {"paths": (str(path),), "probe": "echo hello"}
    alone = HostState().process(_run(HostState().command(**spec)))
    answers = prefetch.Batch().process(
        _run(prefetch.Batch().command((HostState().command(**spec),)))
    )
    assert HostState().process(answers[0][1]) == alone
    assert alone.probe == ["hello"] and str(path) in alone.files


def test_split_gives_back_each_command_and_answer_builds_the_output():
    commands = (HostState().command(paths=("/etc/a b",), probe="{ x; }"), "ip -j r; echo ')'")
    text = prefetch.Batch().command(commands).get_masked_value()
    parts = prefetch.split(text)
    assert parts == [commands[0].get_masked_value(), commands[1]]
    output = prefetch.answer([(0, ["a"]), (1, [])])
    assert prefetch.Batch().process(output) == {0: (0, ["a"]), 1: (1, [])}


def test_request_keys_match_the_roles_reads():
    """host_state.request and host_state.read key the same read alike (package versions off)."""
    a = host_state.request(paths=["/x"], packages=["b=1", "a"])
    b = prefetch.Request.of(
        HostState, paths=("/x",), packages=("a", "b"), units=(), probe="", dirs=()
    )
    assert a.key == b.key
    assert prefetch.Request.of(FirewallHostNetwork, _sudo=False).sudo is False


class _Host:
    def __init__(self, executing: bool) -> None:
        self.state = SimpleNamespace(is_executing=executing)
        self.asked: list = []

    def get_fact(self, cls, **kwargs):
        self.asked.append((cls, kwargs))
        return "from the host"


def test_served_while_planning_and_read_from_the_host_while_operations_run():
    for executing, expected in ((False, "prefetched"), (True, "from the host")):
        host = _Host(executing)
        key = prefetch.Request.of(FirewallHostNetwork, _sudo=False).key
        host_memo(host, "prefetch")["answers"] = {key: "prefetched"}
        assert prefetch.fact(host, FirewallHostNetwork, _sudo=False) == expected


def test_an_undeclared_read_goes_to_the_host():
    host = _Host(False)
    host_memo(host, "prefetch")["answers"] = {}
    assert prefetch.fact(host, FirewallHostNetwork, _sudo=False) == "from the host"
    assert host.asked == [(FirewallHostNetwork, {"_sudo": False})]


def test_the_firewall_finds_the_ssh_connection_under_sudo_too():
    """sudo resets the environment: the fact reads SSH_CONNECTION from the nearest ancestor
    process that has it, so it can run in the one sudo'd read with the others."""
    command = FirewallHostNetwork().command()
    ancestor = f"env -u SSH_CONNECTION sh -c {shlex.quote(f'( {command} ); true')}; true"
    env = {"PATH": "/usr/bin:/bin", "SSH_CONNECTION": "192.0.2.7 50000 192.0.2.1 2222"}
    out = subprocess.run(["bash", "-c", ancestor], capture_output=True, text=True, env=env)
    network = FirewallHostNetwork().process(out.stdout.splitlines())
    assert (network.ssh_client, network.ssh_port) == ("192.0.2.7", 2222)
