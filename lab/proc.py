"""Processes the lab started, identified by PID *and* start time so a reused PID is never hit."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TypedDict


class Proc(TypedDict):
    """A process as the lab records it (in its state.json files)."""

    pid: int
    start: int | None  # start time in clock ticks since boot


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    return int(stat.rpartition(")")[2].split()[19])


def ident(pid: int) -> Proc:
    return {"pid": pid, "start": start_time(pid)}


def alive(p: Proc | None) -> bool:
    if not p:
        return False
    state = start_time(p["pid"])
    return state is not None and state == p["start"] and not _zombie(p["pid"])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... breadth first: a shell in between may or may not exec."""
    found, todo = [], children(pid)
    while todo:
        kid = todo.pop(0)
        found.append(kid)
        todo += children(kid)
    return found


def wait_gone(p: Proc | None, timeout: float) -> bool:
    """Poll until the process is gone; True if it went in time."""
    deadline = time.monotonic() + timeout
    while alive(p):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def kill(p: Proc | None, sig: int = signal.SIGKILL) -> None:
    """Signal the recorded process, only if it is still the same process."""
    if p and alive(p):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p["pid"], sig)
