"""The real pyinfra CLI run from the repo, as a user runs it, and what its output says."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT = 3600
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def pyinfra_command(inventory: Path, *args: str, deploy_file: str = "deploy.py") -> list[str]:
    """``pyinfra -y INVENTORY deploy.py ARGS`` with the venv's pyinfra beside this Python."""
    exe = Path(sys.executable).with_name("pyinfra")
    return [str(exe) if exe.exists() else "pyinfra", "-y", str(inventory), deploy_file, *args]


@dataclass
class DeployRun:
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def changed_operations(self) -> list[str]:
        """Operations that changed a host, from pyinfra's results table ("Success" column:
        pyinfra counts an operation that changed something as success, else as no change)."""
        text = ANSI.sub("", self.output)
        _, found, table = text.partition("--> Results:")
        assert found, f"no results table in pyinfra's output:\n{self.tail()}"
        rows = table.strip().splitlines()
        header = rows[0].split()
        assert header[-5:] == ["Hosts", "Success", "Error", "No", "Change"], header
        changed = []
        for row in rows[1:]:
            if row.lstrip().startswith("-->"):
                break
            if not row.strip():  # Vagrant's trigger output adds empty lines between its chunks
                continue
            name, _hosts, success, _error, _no_change = row.strip().rsplit(None, 4)
            if name == "Grand total":
                break
            if success != "-":
                changed.append(name)
        return changed

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def pyinfra_deploy(
    inventory: Path,
    *args: str,
    deploy_file: str = "deploy.py",
    timeout: float = DEPLOY_TIMEOUT,
    env: dict[str, str] | None = None,
) -> DeployRun:
    """The real CLI, from the repo, as a user runs it (``env``: its environment instead of
    this process's)."""
    started = time.monotonic()
    result = subprocess.run(
        pyinfra_command(inventory, *args, deploy_file=deploy_file), cwd=REPO, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    return DeployRun(result.returncode, result.stdout + result.stderr, time.monotonic() - started)
