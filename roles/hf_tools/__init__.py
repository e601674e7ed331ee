"""Hugging Face tools on the AI guest: git and the `hf` CLI (huggingface_hub, pinned, in its own
virtualenv) for the admin's manual downloads; the tabbyapi role downloads its models with it."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from roles.common import host_state, prefetch
from roles.hf_tools.facts import parse_probe, probe
from roles.hf_tools.settings import HfToolsSettings

__all__ = ["HfToolsSettings", "hf_command", "install"]

LINK = "/usr/local/bin/hf"
PACKAGES = ["git", "python3-venv"]
# Installed with the base role's packages (one transaction on a fresh guest).
host_state.plain_packages("ai_guests")(lambda host_: PACKAGES)


def hf_command() -> str:
    """The `hf` executable the deploy itself uses (the venv's, not whatever PATH finds)."""
    return f"{HfToolsSettings.from_host(host).venv}/bin/hf"


def _read_spec(settings: HfToolsSettings) -> dict:
    return dict(packages=PACKAGES, probe=probe(settings.venv, LINK))


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host``."""
    return [host_state.request(**_read_spec(HfToolsSettings.from_host(host)))]


@deploy("Hugging Face tools")
def install():
    """Ensures git and python3-venv are installed, huggingface_hub at the pinned version is in
    its own virtualenv, and `hf` is on every user's PATH (/usr/local/bin).

    Example, in your own deploy file:

    .. code:: python

        from roles import hf_tools

        hf_tools.install()  # settings: hf_tools_* in group_data/ai_guests.py
    """
    settings = HfToolsSettings.from_host(host)
    state = host_state.read(**_read_spec(settings))
    installed, link = parse_probe(state.probe)
    host_state.packages(state, "git and python3-venv", PACKAGES)
    if installed != settings.huggingface_hub_version:
        venv = shlex.quote(settings.venv)
        server.shell(
            name=f"huggingface_hub {settings.huggingface_hub_version}",
            commands=[
                f"test -x {venv}/bin/pip || python3 -m venv {venv}",
                f"{venv}/bin/pip install --quiet --disable-pip-version-check "
                f"huggingface_hub=={settings.huggingface_hub_version}",
            ],
        )
    target = f"{settings.venv}/bin/hf"  # what hf_command() gives
    if link != target:
        files.link(name="hf on the PATH", path=LINK, target=target)
