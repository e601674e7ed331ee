"""The README's settings tables, generated from the roles' settings classes.

``python -m roles.settings_doc`` prints them; ``--write`` refreshes README.md between its
markers. A unit test fails when README.md and the settings classes disagree.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import roles
from roles.common.settings import REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def load_all_roles() -> None:
    """Import every role package so each settings class registers itself."""
    for module in pkgutil.iter_modules(roles.__path__):
        if module.ispkg and module.name != "common":
            importlib.import_module(f"roles.{module.name}")


def _cell(value) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return "`" + text.replace("|", "\\|") + "`"


def tables() -> str:
    load_all_roles()
    parts = []
    for prefix in sorted(REGISTRY):
        cls = REGISTRY[prefix]
        groups = ", ".join(cls.GROUPS) or "all hosts"
        parts.append(
            f"#### `{prefix}` ({groups})\n\n| key | default | what it does |\n|---|---|---|"
        )
        parts += [f"| `{key}` | {_cell(default)} | {doc} |" for key, default, doc in cls.docs()]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def readme_block(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{tables()}{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        sys.stdout.write(tables())
