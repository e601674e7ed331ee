"""The docker role's probe (daemon.json, docker group, users) and the daemon.json fact."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase
from pyinfra.api.exceptions import DeployError
from typing_extensions import override

DAEMON_JSON = "/etc/docker/daemon.json"


class DaemonJsonError(DeployError):
    pass


def parse_daemon_json(text: str) -> dict:
    """The daemon.json keys; {} for a missing or empty file. Anything but a JSON object is an
    error: the deploy never overwrites a file it cannot read."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DaemonJsonError(
            f"{DAEMON_JSON} is not valid JSON ({error}); fix or remove it, the deploy merges its "
            "keys into the file and will not overwrite what it cannot read"
        ) from None
    if not isinstance(data, dict):
        raise DaemonJsonError(
            f"{DAEMON_JSON} holds a {type(data).__name__}, not a JSON object; fix or remove it"
        )
    return data


class DaemonJson(FactBase):
    """The parsed content of /etc/docker/daemon.json ({} when missing or empty)."""

    @override
    def command(self):
        return f"if [ -f {DAEMON_JSON} ]; then cat {DAEMON_JSON}; fi"

    @override
    def process(self, output):
        return parse_daemon_json("\n".join(output))

    @staticmethod
    @override
    def default():
        return {}


@dataclass
class DockerProbe:
    daemon_json: dict = field(default_factory=dict)
    group_members: set[str] = field(default_factory=set)  # of the docker group
    users: set[str] = field(default_factory=set)  # of the asked users, those that exist
    # daemon.json is newer than the running daemon: a run was killed between writing the file
    # and restarting Docker, so the next run must restart it although the file is converged.
    daemon_json_newer: bool = False


def probe(users: list[str]) -> str:
    """Shell for the role's HostState read: daemon.json, the docker group, the users."""
    names = " ".join(shlex.quote(u) for u in users)
    return "; ".join(
        [
            f"[ -f {DAEMON_JSON} ] && sed 's/^/json /' {DAEMON_JSON}",
            "getent group docker | sed 's/^/group /'",
            f"getent passwd {names} | cut -d: -f1 | sed 's/^/user /'",
            f't=$(systemctl show -P ActiveEnterTimestamp docker 2>/dev/null) && [ -n "$t" ] '
            f'&& [ -f {DAEMON_JSON} ] && [ $(stat -c %Y {DAEMON_JSON}) -gt $(date -d "$t" +%s) ] '
            "&& echo newer",
            "true",
        ]
    )


def parse_probe(lines: list[str]) -> DockerProbe:
    result = DockerProbe()
    json_lines = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "json":
            json_lines.append(rest)
        elif kind == "group":
            members = rest.strip().split(":")[3] if rest.count(":") >= 3 else ""
            result.group_members = {m for m in members.split(",") if m}
        elif kind == "user":
            result.users.add(rest.strip())
        elif kind == "newer":
            result.daemon_json_newer = True
    result.daemon_json = parse_daemon_json("\n".join(json_lines))
    return result
