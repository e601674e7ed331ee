"""Render the Jinja2 templates under templates/<role>/ (text files: units, modprobe, apt pins)."""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,  # a missing value is an error, never an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render(name: str, **values) -> str:
    """Render ``templates/<name>`` (e.g. ``"docker/daemon.j2"``) with ``values``."""
    return _ENV.get_template(name).render(**values)
