"""Secrets (API keys, tokens) from the environment or a git-ignored secrets file.

Lookup order for a secret NAME: the environment variable ``AICODER_<NAME>``, then the YAML file
named by ``AICODER_SECRETS_FILE`` (default ``secrets.yml`` beside deploy.py, mode 0600). Keys the
user does not give are generated once and written back to that file, so re-runs are stable.
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

import yaml
from pyinfra.api.exceptions import PyinfraError

PROJECT_DIR = Path(__file__).resolve().parents[2]


class SecretError(PyinfraError):
    pass


def secrets_file() -> Path:
    return Path(os.environ.get("AICODER_SECRETS_FILE", PROJECT_DIR / "secrets.yml"))


def _load(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    mode = path.stat().st_mode & 0o077
    if mode:
        raise SecretError(
            f"{path} is readable by other users (mode {oct(path.stat().st_mode & 0o777)}); "
            f"fix it with: chmod 600 {path}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SecretError(f"{path} must be a YAML mapping of NAME: value")
    return {str(k): str(v) for k, v in data.items()}


def get(name: str, required: bool = False, hint: str = "") -> str | None:
    """A secret given by the user, or None (a SecretError if ``required``)."""
    env = f"AICODER_{name.upper()}"
    if os.environ.get(env):
        return os.environ[env]
    value = _load(secrets_file()).get(name)
    if value is None and required:
        raise SecretError(
            f"secret {name!r} is missing: export {env}=... or add '{name}: ...' to "
            f"{secrets_file()} (mode 0600). {hint}".strip()
        )
    return value


def get_or_create(name: str) -> str:
    """A secret given by the user, else one generated now and kept in the secrets file."""
    value = get(name)
    if value:
        return value
    path = secrets_file()
    data = _load(path)
    data[name] = _random.token_hex(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, default_flow_style=False)
    os.chmod(path, 0o600)
    return data[name]
