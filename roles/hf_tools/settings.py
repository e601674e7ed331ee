"""Settings of the hf_tools role (AI guest): the Hugging Face CLI for the admin's downloads."""

from __future__ import annotations

from dataclasses import dataclass

from roles.common import checks
from roles.common.settings import RoleSettings, setting


@dataclass(frozen=True)
class HfToolsSettings(RoleSettings):
    PREFIX = "hf_tools"
    GROUPS = ("ai_guests",)

    huggingface_hub_version: str = setting(
        "2.4.0",
        "huggingface_hub release (from PyPI, or the index in /etc/pip.conf) that provides `hf`",
        checks.matches(r"[0-9]+(\.[0-9]+){1,3}([a-z]+[0-9]*)?", "a version like 2.4.0"),
    )
    venv: str = setting(
        "/opt/hf-cli",
        "virtualenv of the CLI; `hf` is linked into /usr/local/bin from there",
        checks.absolute_path,
    )
