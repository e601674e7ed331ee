"""The vllm role's probe: its install, the guest's GPUs and the model, read together with its
files, packages and unit in the role's one HostState round trip (roles/common/host_state.py)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from roles.common.services import ServiceHost, service_host_probe
from roles.hf_tools import models
from roles.vllm.render import INSTALL_STAMP


@dataclass
class VllmState(ServiceHost):
    installed: str = ""  # the install stamp: what the last successful pip install was for


def parse_state(lines: list[str]) -> VllmState:
    stamps = [line.partition(" ")[2].strip() for line in lines if line.startswith("installed ")]
    state = VllmState(installed=stamps[0] if stamps else "")
    state.read(lines)
    state.models = models.parse(lines)
    return state


def probe(venv: str, python: str, user: str, model_dir: str, folders: list[str]) -> str:
    """The install stamp, the guest's interpreter, GPUs, service user and address, and which
    model folders are complete."""
    stamp = shlex.quote(f"{venv}/{INSTALL_STAMP}")
    return "; ".join(
        [
            f"echo installed $(cat {stamp} 2>/dev/null)",
            *service_host_probe(python, user),
            *models.probe(model_dir, folders),
        ]
    )
