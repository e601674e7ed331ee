"""Benchmark of the deploy on the lab: times, remote round trips and SSH connections per host.

Fresh deploy time, no-change re-run time (median of several runs), and per host and per role the
remote round trips and the SSH connections.

    python -m lab.bench [--runs 5] [--fresh] [--group ai_guests|hypervisors|all]

Runs the real deploy.py in-process through pyinfra's API (the same code the CLI runs) and counts
every command and file transfer each host's connector makes (one round trip each), attributed to
the host and to the top-level ``@deploy`` (role) that made it, and every SSH connection pyinfra
opens (its ``host_connect`` callback). ``--fresh`` first recreates the lab machines (``down`` +
``up``) so the first run is a fresh deploy. The lab must be up (``python -m lab up``; with
``--machines guest,hv`` for the hypervisor).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory_from_files
from pyinfra_cli.util import load_deploy_file
from typing_extensions import override

from lab.config import Lab

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = "(deploy.py: validation, planner)"


@dataclass
class RunStats:
    """One deploy run: wall time, changed operations, per-role remote calls and time, and per
    host the remote round trips (commands and file transfers) and SSH connections."""

    wall: float = 0.0
    changed: int = 0
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    round_trips: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    connections: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (host, role, what)


def _role_of(state: State, host) -> str:
    """The top-level deploy that the host is working for right now."""
    name = None
    if host.current_op_hash:
        names = state.get_op_meta(host.current_op_hash).names
        name = sorted(names)[0] if names else None
    name = name or host.current_deploy_name
    return name.split(" | ")[0] if name and " | " in name else (name or OUTSIDE)


class _ConnectionCounter(BaseStateCallback):
    """Counts the connections pyinfra opens (its first, and any after a reboot)."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats

    @override
    def host_connect(self, state: State, host) -> None:  # type: ignore[override]
        self.stats.connections[host.name] += 1


def _what(method: str, args: tuple) -> str:
    """A short, secret-free description of one connector call: a command's masked first line."""
    if method != "run_shell_command" or not args:
        return method
    command = args[0]
    masked = command.get_masked_value() if hasattr(command, "get_masked_value") else str(command)
    return masked.strip().splitlines()[0][:100] if masked.strip() else ""


def _instrument(state: State, host, stats: RunStats) -> None:
    """Count and time every call of the host's connector that goes to the host."""
    connector = host.connector
    for method in ("run_shell_command", "put_file", "get_file"):
        original = getattr(connector, method)

        def timed(*args, _original=original, _method=method, **kwargs):
            role = _role_of(state, host)
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                stats.calls[role] += 1
                stats.round_trips[host.name] += 1
                stats.sent.append((host.name, role, _what(_method, args)))
                stats.seconds[role] += time.perf_counter() - started

        setattr(connector, method, timed)


def run_deploy(inventory_path: Path, group: str, deploy: Path = REPO / "deploy.py") -> RunStats:
    """Run ``deploy`` once against the hosts of ``group`` (``all``: every host) in the
    inventory; raise on failure."""
    stats = RunStats()
    started = time.perf_counter()
    # As `pyinfra -y` does: a State without change detection, set before the inventory loads.
    state = State(check_for_changes=False)
    with ctx_state.use(state):
        inventory = make_inventory_from_files(str(inventory_path), cwd=str(REPO))
        hosts = list(inventory) if group == "all" else list(inventory.get_group(group))
        state.init(inventory, Config(), initial_limit=hosts)
        state.add_callback_handler(_ConnectionCounter(stats))
        for host in hosts:
            _instrument(state, host, stats)
        connect_all(state)
        load_deploy_file(state, str(deploy))
        run_ops(state)
        for host in hosts:
            for op_data in state.ops[host].values():
                meta = op_data.operation_meta
                stats.changed += int(meta.is_complete() and meta.did_change())
        failed = [h.name for h in hosts if state.results[h].error_ops]
    stats.wall = time.perf_counter() - started
    if failed:
        raise SystemExit(f"bench: the deploy failed on {', '.join(failed)}")
    return stats


def _median(values) -> float:
    return statistics.median(values) if values else 0.0


def table(fresh: RunStats | None, reruns: list[RunStats]) -> str:
    """The figures as Markdown tables, per host and per role: medians over the no-change runs."""
    runs = [*reruns, *([fresh] if fresh else [])]
    hosts = sorted({h for run in runs for h in [*run.round_trips, *run.connections]})
    rows = [
        "| host | fresh round trips | fresh SSH connections "
        "| no-change round trips | no-change SSH connections |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in hosts:
        fresh_rt = f"{fresh.round_trips.get(name, 0)}" if fresh else "-"
        fresh_conn = f"{fresh.connections.get(name, 0)}" if fresh else "-"
        rows.append(
            f"| {name} | {fresh_rt} | {fresh_conn} "
            f"| {_median([r.round_trips.get(name, 0) for r in reruns]):.0f} "
            f"| {_median([r.connections.get(name, 0) for r in reruns]):.0f} |"
        )
    rows += ["", "| role | fresh deploy s | no-change s | no-change remote commands |"]
    rows.append("|---|---:|---:|---:|")
    for role in sorted({r for run in runs for r in run.calls}):
        fresh_s = f"{fresh.seconds.get(role, 0):.1f}" if fresh else "-"
        rows.append(
            f"| {role} | {fresh_s} | {_median([r.seconds.get(role, 0) for r in reruns]):.2f} "
            f"| {_median([r.calls.get(role, 0) for r in reruns]):.0f} |"
        )
    fresh_wall = f"{fresh.wall:.1f}" if fresh else "-"
    rows.append(
        f"| **total (wall clock)** | {fresh_wall} | {_median([r.wall for r in reruns]):.2f} "
        f"| {_median([sum(r.calls.values()) for r in reruns]):.0f} |"
    )
    changed = sorted({r.changed for r in reruns})
    rows.append("")
    rows.append(f"no-change runs: {len(reruns)}; operations changed in them: {changed}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="no-change runs (default 5)")
    parser.add_argument(
        "--commands", action="store_true", help="list what the last no-change run sent"
    )
    parser.add_argument("--fresh", action="store_true", help="recreate the machines first")
    parser.add_argument(
        "--group", default="ai_guests", help="inventory group, or all (default ai_guests)"
    )
    args = parser.parse_args(argv)

    lab = Lab.from_env()
    lab_cli = [sys.executable, "-m", "lab"]
    fresh = None
    if args.fresh:
        subprocess.run([*lab_cli, "down"], cwd=REPO, check=True)
        machines = {"ai_guests": "guest", "hypervisors": "hv"}.get(args.group, "guest,hv")
        subprocess.run([*lab_cli, "up", "--machines", machines], cwd=REPO, check=True)
        fresh = run_deploy(lab.inventory, args.group)
        print(f"fresh deploy: {fresh.wall:.1f} s, {fresh.changed} operations changed", flush=True)
    elif not lab.inventory.exists():
        raise SystemExit("bench: the lab is not up; run `python -m lab up` first")
    run_deploy(lab.inventory, args.group)  # converge first: the runs below must be no-change
    reruns = [run_deploy(lab.inventory, args.group) for _ in range(args.runs)]
    print(table(fresh, reruns))
    if args.commands and reruns:
        print("\nwhat the last no-change run sent (host, role, command):")
        print("\n".join(f"  {h} | {role} | {what}" for h, role, what in reruns[-1].sent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
