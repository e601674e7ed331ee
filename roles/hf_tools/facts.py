"""The hf_tools role's probe, read in its one HostState round trip."""

from __future__ import annotations

import shlex


def probe(venv: str, link: str) -> str:
    """The huggingface_hub version in ``venv`` and where ``link`` points."""
    python = shlex.quote(f"{venv}/bin/python")
    return (
        f"echo version $({python} -c 'import huggingface_hub as h; print(h.__version__)' "
        f"2>/dev/null); echo link $(readlink {shlex.quote(link)})"
    )


def parse_probe(lines: list[str]) -> tuple[str | None, str | None]:
    """(installed version, link target), None for what is not there."""
    found = {}
    for line in lines:
        kind, _, value = line.partition(" ")
        found[kind] = value.strip() or None
    return found.get("version"), found.get("link")
