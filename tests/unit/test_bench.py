"""lab.bench counts what pyinfra sends: every command and transfer, and every connection."""

from __future__ import annotations

from pathlib import Path

from lab.bench import run_deploy, table

DEPLOY = """
from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

host.get_fact(Command, command="uname -r")
server.shell(name="two commands", commands=["echo one", "echo two"])
if host.name == "@fake/two":
    files.put(name="one upload", src=__file__, dest="/tmp/x", add_deploy_dir=False)
"""

INVENTORY = """
hosts = [
    ("@fake/one", {"fake_delay": 0, "fake_delay_jitter": 0}),
    ("@fake/two", {"fake_delay": 0, "fake_delay_jitter": 0}),
]
"""


def test_round_trips_and_connections_are_counted_per_host(tmp_path: Path) -> None:
    (tmp_path / "inventory.py").write_text(INVENTORY)
    (tmp_path / "deploy.py").write_text(DEPLOY)

    stats = run_deploy(tmp_path / "inventory.py", "all", deploy=tmp_path / "deploy.py")

    assert stats.connections == {"@fake/one": 1, "@fake/two": 1}
    one, two = stats.round_trips["@fake/one"], stats.round_trips["@fake/two"]
    assert one == 3  # the fact and both commands
    assert two > one + 1  # files.put's own fact reads and the upload, on that host only
    assert sum(stats.calls.values()) == one + two  # every call is also counted per role
    assert [what for h, _, what in stats.sent if h == "@fake/one"][-2:] == ["echo one", "echo two"]
    text = table(None, [stats])
    assert "| @fake/two | - | - | " + f"{two} | 1 |" in text
