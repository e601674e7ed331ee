"""Own cgroup v1 groups for each machine, so Docker inside can apply resource limits.

On a host where every controller is on cgroup v1, nspawn hands the machine read-only controller
trees; Docker can write them only if the machine sits in a cgroup of its own in every v1
hierarchy (LAB-FACTS.md, option b). A host without v1 hierarchies gets nothing here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def hierarchies() -> list[Path]:
    """Mount points of the host's cgroup v1 hierarchies."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup":
                points.append(Path(left.split()[4]))
    return points


def create(path: str) -> list[Path]:
    """Create `path` (like "aicoder-lab-lab/guest") in every v1 hierarchy; return the dirs."""
    made = []
    for root in hierarchies():
        parent = root
        for part in Path(path).parts:
            child = parent / part
            if not child.is_dir():
                child.mkdir()
                # A new cpuset group has no CPUs and no memory nodes: a task cannot join it.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if (parent / name).exists():
                        (child / name).write_text((parent / name).read_text())
            parent = child
        made.append(parent)
    return made


def join(dirs: list[Path]) -> None:
    """Move the calling process into `dirs` (run in the child before it execs nspawn)."""
    for d in dirs:
        (d / "cgroup.procs").write_text(str(os.getpid()))


def remove(path: str) -> list[str]:
    """Remove `path` and whatever was created below it; return the dirs that stay (busy)."""
    busy = []
    for root in hierarchies():
        top = root / path
        if not top.is_dir():
            continue
        # Bottom-up: Docker and nspawn leave empty child groups below the machine's group.
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                busy.append(dirpath)
        with contextlib.suppress(OSError):
            top.parent.rmdir()  # the lab's group, once its last machine is gone
    return busy
