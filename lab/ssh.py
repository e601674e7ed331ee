"""SSH from the host into lab machines with the lab's own key."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from lab.config import Lab

OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=5",
]  # fmt: skip


def ensure_key(lab: Lab) -> Path:
    """The lab instance's key pairs, the admin user's and root's (created once, kept across
    up/down); returns the admin user's."""
    for key, who in ((lab.key, "admin"), (lab.root_key, "root")):
        if not key.exists():
            lab.dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"aicoder-{lab.name}-{who}",
                 "-f", str(key)],
                check=True,
            )  # fmt: skip
    return lab.key


def command(lab: Lab, ip: str, *cmd: str, tty: bool = False, port: int = 22) -> list[str]:
    """``ssh`` as root into a machine (a VM's port forward: ``port`` on 127.0.0.1)."""
    forward = ["-p", str(port)] if port != 22 else []
    tty_flag = ["-t"] if tty else []
    return ["ssh", *OPTIONS, "-i", str(lab.root_key), *forward, *tty_flag, f"root@{ip}", *cmd]


def run(lab: Lab, ip: str, cmd: str, check: bool = True, timeout: float = 600, port: int = 22):
    """Run a shell command in a machine as root; returns the CompletedProcess (text, captured)."""
    return subprocess.run(
        command(lab, ip, cmd, port=port), check=check, timeout=timeout, capture_output=True,
        text=True,
    )  # fmt: skip


def wait_ready(lab: Lab, ip: str, timeout: float, alive=lambda: True) -> None:
    """Wait until `ssh root@ip true` works, the machine dies (`alive()` false) or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"machine at {ip} stopped while booting")
        try:
            with socket.create_connection((ip, 22), timeout=1):
                pass
            if run(lab, ip, "true", check=False, timeout=10).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no SSH on {ip} after {timeout:.0f} s")
