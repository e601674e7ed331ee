"""Secrets (API keys, tokens) from the environment or a git-ignored secrets file.

Lookup order for a secret NAME: the environment variable ``AICODER_<NAME>``, then the YAML file
named by ``AICODER_SECRETS_FILE`` (default ``secrets.yml`` beside deploy.py, mode 0600). Keys the
user does not give are generated once, kept in memory, and added to that file by the run's
first operation that needs them: ``--dry`` and a refused run write nothing. The file is only
ever appended to (what the user wrote stays byte for byte), atomically, mode 0600.

No message here ever shows a secret's value or the file's content: a bad file is named by its
path and line only.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import tempfile
from pathlib import Path

import yaml
from pyinfra import logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import python

from roles.common.checks import CONTROL

PROJECT_DIR = Path(__file__).resolve().parents[2]
NAME = re.compile(r"[a-z][a-z0-9_]*")
KNOWN = ("tabbyapi_api_key", "tabbyapi_admin_key", "vllm_api_key", "hf_token")
"""The secrets the roles read (AICODER_<NAME> in the environment)."""
_GENERATED: dict[tuple[str, str], str] = {}  # (file, name) -> value not yet in the file


class SecretError(PyinfraError):
    """A secret or the secrets file is unusable; ``problems`` are (where, what) pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.problems = problems or [("secrets", message)]


def secrets_file() -> Path:
    return Path(os.environ.get("AICODER_SECRETS_FILE", PROJECT_DIR / "secrets.yml"))


def mask(value: str) -> str:
    """What output may show of a secret: its length only."""
    return f"<{len(value)} characters, hidden>"


def _value_problem(value: object) -> str | None:
    """Why a secret's value is unusable, without showing it."""
    if not isinstance(value, str):
        return (
            f"is a YAML {type(value).__name__}, not a string (YAML reads 0123 as 83, yes as "
            "true); quote it: NAME: '...'"
        )
    if "PRIVATE KEY" in value:
        return "looks like a private key; secrets here are API keys and tokens"
    found = CONTROL.search(value)
    if found:
        return (
            f"holds a control character (a newline?) at position {found.start() + 1}; "
            "a secret is one line"
        )
    if not value:
        return "is empty"
    return None


def _check_place(path: Path) -> None:
    if path.is_dir():
        raise SecretError(f"{path} is a folder; AICODER_SECRETS_FILE names a file (secrets.yml)")
    if not path.parent.is_dir():
        raise SecretError(
            f"the folder of {path} does not exist; create it (mkdir -p {path.parent}) or point "
            "AICODER_SECRETS_FILE elsewhere"
        )


def _load(path: Path) -> dict[str, str]:
    """The file's secrets, each checked; a SecretError names the file and line, never content."""
    _check_place(path)
    if not path.exists():
        return {}
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretError(
            f"{path} is readable by other users (mode {oct(mode)}); fix it with: chmod 600 {path}"
        )
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
        data = yaml.safe_load(path.read_text()) if root is not None else {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SecretError(
            f"{path} is not valid YAML{where} (content not shown: it holds secrets); it must "
            "be lines of NAME: 'value'"
        ) from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise SecretError(f"{path} must be a YAML mapping of NAME: 'value' lines")
    problems = []
    for key_node, value_node in root.value:
        value = data.get(key_node.value) if isinstance(key_node.value, str) else None
        line = f"{path} line {key_node.start_mark.line + 1}"
        if not (isinstance(key_node.value, str) and NAME.fullmatch(key_node.value)):
            problems.append((line, "the name is not lower-case letters, digits and _"))
            continue
        problem = _value_problem(value if isinstance(value_node, yaml.ScalarNode) else [])
        if problem:
            problems.append((line, f"{key_node.value} {problem}"))
    if problems:
        lines = "\n".join(f"  - {where}: {what}" for where, what in problems)
        raise SecretError(f"bad secrets file:\n{lines}", problems)
    return data


def get(name: str, required: bool = False, hint: str = "") -> str | None:
    """A secret given by the user, or None (a SecretError if ``required``)."""
    env = f"AICODER_{name.upper()}"
    if os.environ.get(env):
        problem = _value_problem(os.environ[env])
        if problem:
            raise SecretError(f"environment variable {env} {problem}")
        return os.environ[env]
    path = secrets_file()
    value = _load(path).get(name) or _GENERATED.get((str(path), name))
    if value is None and required:
        raise SecretError(
            f"secret {name!r} is missing: export {env}=... or add '{name}: ...' to "
            f"{path} (mode 0600). {hint}".strip()
        )
    return value


def check_all() -> None:
    """Read the secrets file and every AICODER_* secret variable now: a SecretError if any is
    unusable (the same checks as ``get``)."""
    _load(secrets_file())
    for env, value in os.environ.items():
        if env.removeprefix("AICODER_").lower() in KNOWN and env.startswith("AICODER_"):
            problem = _value_problem(value) if value else None
            if problem:
                raise SecretError(f"environment variable {env} {problem}")


def get_or_create(name: str) -> str:
    """A secret given by the user, else one generated now: kept in memory until ``keep`` (run
    by an operation, so ``--dry`` and a refused run write nothing) adds it to the file."""
    value = get(name)
    if value:
        return value
    path = secrets_file()
    value = _GENERATED[(str(path), name)] = _random.token_hex(24)
    logger.info(f"Generated secret {name} {mask(value)}; a real run adds it to {path}")
    return value


def record(name: str, value: str) -> None:
    """Add ``name: value`` (no secret: a revocation record, say) to the file with the next
    ``keep``, unless the file holds ``name`` already."""
    path = secrets_file()
    if name not in _load(path):
        _GENERATED[(str(path), name)] = value


def file_names() -> list[str]:
    """The names the secrets file holds."""
    return list(_load(secrets_file()))


def pending() -> list[str]:
    """Names generated this run that the secrets file does not hold yet."""
    path = str(secrets_file())
    return sorted(name for file, name in _GENERATED if file == path)


def keep() -> None:
    """Append the generated secrets to the file: what is there stays byte for byte (comments,
    formatting), the new file replaces the old atomically, mode 0600."""
    path = secrets_file()
    names = [n for n in pending() if n not in _load(path)]
    if not names:
        return
    old = path.read_bytes() if path.exists() else b"# Secrets of the ai-coding-server deploy\n"
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = "".join(f"{n}: '{_GENERATED[(str(path), n)]}'\n" for n in names).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(old + new)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for n in names:
        _GENERATED.pop((str(path), n))


def keep_operation() -> None:
    """Plan the operation (on the current host) that runs ``keep``; none when nothing is new.
    ``--dry`` runs no operation, so it writes nothing."""
    names = pending()
    if names:
        python.call(
            name=f"Add {', '.join(names)} to {secrets_file()}",
            function=keep,
        )
