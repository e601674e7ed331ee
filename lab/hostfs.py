"""Careful file-tree removal on the host."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix[:-1]:
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """Remove `path`, never following a mount out of it (an interrupted mmdebstrap can leave
    /proc, /sys or /dev mounted inside its target)."""
    if not path.exists():
        return
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    if mounts_under(path):
        raise RuntimeError(f"{path} still has mounts inside; not removing it")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True)
