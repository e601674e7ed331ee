"""Run Continue's own config schema (@continuedev/config-yaml, pinned in package-lock.json) on
config.yaml files from the Python tests. The npm packages are installed into tests/node/
node_modules by `npm ci` the first time (and again when the lock file changes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "validate-continue-config.mjs"
STAMP = HERE / "node_modules" / ".package-lock.json"  # npm writes it after every install


def ensure_installed() -> None:
    """`npm ci` unless node_modules matches the lock file; skip when Node.js is missing."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js/npm not installed: Continue's schema package cannot run here")
    lock = HERE / "package-lock.json"
    if STAMP.exists() and STAMP.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm ci failed in {HERE}:\n{done.stdout}{done.stderr}"


def validate(*paths: Path) -> tuple[int, str]:
    """(exit code, messages) of the validator on ``paths``: 0 when every file is valid."""
    ensure_installed()
    done = subprocess.run(
        ["node", str(SCRIPT), *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout + done.stderr
