"""The tabbyapi role's probe: what its install looks like on the guest, read together with its
files, packages and unit in the role's one HostState round trip (roles/common/host_state.py)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from roles.common.services import ServiceHost, service_host_probe
from roles.hf_tools import models
from roles.tabbyapi.render import INSTALL_STAMP


@dataclass
class TabbyapiState(ServiceHost):
    head: str = ""  # commit checked out in <install_dir>/src ("" without a checkout)
    ref: str = ""  # the wanted ref resolved in that checkout ("" if unknown there)
    origin: str = ""  # its remote.origin.url
    installed: str = ""  # the install stamp: what the last successful pip install was for
    current: str = ""  # the release folder <install_dir>/current links ("" if none)
    locked: bool = False  # the wanted release's pip freeze lock exists
    links: dict[str, str] = field(default_factory=dict)  # symlink -> its target


def parse_state(lines: list[str]) -> TabbyapiState:
    state = TabbyapiState()
    state.read(lines)
    state.models = models.parse(lines)
    for line in lines:
        kind, _, value = line.partition(" ")
        value = value.strip()
        if kind in ("head", "ref", "origin", "installed", "current"):
            setattr(state, kind, value)
        elif kind == "locked":
            state.locked = value == "yes"
        elif kind == "link":
            path, _, target = value.partition(" ")
            state.links[path] = target
    return state


def probe(
    src: str,
    venv: str,
    ref: str,
    python: str,
    user: str,
    model_dir: str,
    folders: list[str],
    links: list[str],
    current: str,
    lock: str,
) -> str:
    """The wanted release's checkout and install stamp, the release the service runs, whether
    the wanted one's lock exists, interpreter, GPU count, the service user, which model folders
    are complete (a config.json and at least one *.safetensors: a failed download leaves
    neither), the role's links, and the guest's primary address."""
    q = shlex.quote
    git = f"git -C {q(src)}"
    lines = [
        f"echo head $({git} rev-parse -q --verify HEAD 2>/dev/null)",
        f"echo ref $({git} rev-parse -q --verify {q(ref + '^{commit}')} 2>/dev/null)",
        f"echo origin $({git} config --get remote.origin.url 2>/dev/null)",
        f"echo installed $(cat {q(venv + '/' + INSTALL_STAMP)} 2>/dev/null)",
        f"echo current $(readlink {q(current)} 2>/dev/null)",
        f"[ -f {q(lock)} ] && echo locked yes || echo locked no",
        *service_host_probe(python, user),
        *models.probe(model_dir, folders),
    ]
    if links:
        paths = " ".join(q(link) for link in links)
        lines.append(f'for l in {paths}; do [ -L "$l" ] && echo "link $l $(readlink "$l")"; done')
    return "; ".join(lines)
