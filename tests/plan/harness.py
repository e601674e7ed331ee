"""Run the real deploy.py against pyinfra's ``@fake`` connector with recorded facts.

A plan test describes a host by the recorded outputs of the commands pyinfra's facts run
(``fake_responses``), runs the whole deploy for real through the fake connector, and reads back
which operations changed and the exact commands they ran.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.operations import run_ops
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import ctx_state
from pyinfra_cli.util import load_deploy_file

from roles.common import prefetch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "el9"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> str:
    """A recorded command output: tests/fixtures/el9 first, then tests/plan/fixtures."""
    for folder in (FIXTURES, LOCAL_FIXTURES):
        if (folder / name).exists():
            return (folder / name).read_text()
    raise FileNotFoundError(name)


def os_release_response(text: str) -> dict:
    """The LinuxDistribution fact's output for a host whose /etc/os-release is ``text``."""
    return {re.compile(r"ls -pdL \*-release"): f"/etc/os-release\n{text.strip()}\n---"}


def debian_release(version: int = 12) -> dict:
    """The LinuxDistribution fact's output for a Debian ``version`` host (recorded os-release)."""
    return os_release_response(fixture(f"os-release.debian-{version}.txt"))


@dataclass
class Plan:
    """What the deploy did on one fake host: (operation name, commands) for changed ops."""

    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # uploaded path -> content
    error: Exception | None = None
    operations: int = 0  # every operation planned, changed or not
    reads: list[str] = field(default_factory=list)  # commands sent while planning (round trips)
    # Those sent by the deploy's own code, not by an operation checking what it would change.
    role_reads: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)  # every command sent, plan and run

    @property
    def commands(self) -> list[str]:
        return [c for _, cmds in self.changed for c in cmds]

    def names(self) -> list[str]:
        return [name for name, _ in self.changed]

    def find(self, pattern: str) -> list[str]:
        return [c for c in self.commands if re.search(pattern, c)]


def repeats_its_role(name: str) -> bool:
    """Whether an operation's own name starts with its deploy's role, which pyinfra already
    prints before it (``Ollama | Ollama: compose.yaml``; nested deploys: the innermost one's,
    ``Firewall: configure | Firewall: nftables | Firewall: ruleset``)."""
    *deploys, own = name.split(" | ")
    role = deploys[-1].split(":")[0] if deploys else ""
    return bool(role) and (own == role or own.startswith(role + ":"))


def run_plan(
    groups: dict[str, dict],
    responses: dict,
    host_data: dict | None = None,
    deploy_file: Path = ROOT / "deploy.py",
) -> Plan:
    """Run ``deploy_file`` on one ``@fake`` host in ``groups`` (name -> group data)."""
    data = {"fake_responses": responses, "fake_delay": 0, "fake_delay_jitter": 0}
    data.update(host_data or {})
    name = "@fake/planhost"
    group_args = {g: ([name], gdata) for g, gdata in groups.items()}
    inventory = Inventory(([(name, data)], {}), **group_args)
    state = State(inventory, Config())
    plan = Plan()
    host = inventory.get_host(name)
    with ctx_state.use(state):
        connect_all(state)
        _answer_batches(host.connector)
        _record_role_reads(host, plan)
        try:
            load_deploy_file(state, str(deploy_file))
        except Exception as error:  # the deploy refused this host before any operation ran
            plan.error = error
            return plan
        finally:
            plan.reads = list(host.connector.executed_commands)  # type: ignore[attr-defined]
        run_ops(state)
        plan.executed = list(host.connector.executed_commands)  # type: ignore[attr-defined]
    plan.operations = len(state.get_op_order())
    for op_hash in state.get_op_order():
        op_meta = state.ops[host].get(op_hash)
        if op_meta is None:
            continue
        meta = op_meta.operation_meta
        if meta.is_complete() and meta.did_change():
            names = state.get_op_meta(op_hash).names
            plan.changed.append(
                (" | ".join(sorted(names)), [_text(c, plan) for c in meta._commands])
            )
    return plan


def _record_role_reads(host, plan: Plan) -> None:
    """Note each command sent outside an operation (the roles' and the validation's reads)."""
    original = host.connector.run_shell_command

    def run(command, *args, **kwargs):
        if host.current_op_hash is None and not host.state.is_executing:
            text = command if isinstance(command, str) else command.get_masked_value()
            plan.role_reads.append(text)
        return original(command, *args, **kwargs)

    host.connector.run_shell_command = run


def _answer_batches(connector) -> None:
    """Let the fake host answer the deploy's one read per host (roles/common/prefetch.py) as a
    shell would: each command in it looked up in ``fake_responses`` on its own."""
    original = connector._lookup_response

    def lookup(command: str):
        parts = prefetch.split(command)
        if not parts:
            return original(command)
        outputs = []
        for part in parts:
            ok, output = original(part)
            outputs.append((0 if ok else 1, output.stdout_lines))
        return True, CommandOutput(
            [OutputLine("stdout", line) for line in prefetch.answer(outputs)]
        )

    connector._lookup_response = lookup


def _text(command, plan: Plan) -> str:
    """A command as text; an upload reads ``upload DEST`` and its content goes to plan.files."""
    if isinstance(command, FileUploadCommand):
        src = command.src
        content = src.getvalue() if hasattr(src, "getvalue") else Path(str(src)).read_text()
        plan.files[command.dest] = content.decode() if isinstance(content, bytes) else content
        return f"upload {command.dest}"
    getter = getattr(command, "get_masked_value", None)
    return getter() if getter else str(command)


def file_line(path: str, content: str, mode: str = "644", owner: str = "root:root") -> str:
    """A HostState ``file`` line (roles/common/host_state.py) for a file holding ``content``."""
    return f"file {mode} {owner} {hashlib.sha1(content.encode()).hexdigest()} {path}"


def package_lines(names, version: str = "1.0-1") -> list[str]:
    """HostState ``package`` lines for installed packages (``name`` or ``name=version``)."""
    return [f"package ii  {name.partition('=')[0]} {name.partition('=')[2] or version}"
            for name in names]  # fmt: skip
