"""Docker engine on the Debian 12 AI guest: Docker's repository or Debian's packages."""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd

from roles.base.settings import BaseSettings
from roles.common import apt_repo, host_state, prefetch
from roles.common.host_state import UNCHANGED
from roles.common.memo import host_memo
from roles.common.platform import DEBIAN, DEBIAN_12, profile
from roles.docker import facts, render
from roles.docker.facts import DAEMON_JSON, DaemonJson
from roles.docker.settings import DockerSettings

__all__ = ["DockerSettings", "compose_command", "install", "merge_daemon_json", "restart"]


def compose_command() -> list[str]:
    """The compose command for this host's Docker source and release, e.g. ``["docker",
    "compose"]`` or ``["docker-compose"]`` (Debian 12's v1). Roles that run compose projects use
    this."""
    return render.compose_command(DockerSettings.from_host(host), profile(host, (DEBIAN,)))


def merge_daemon_json(name: str, keys: dict[str, Any]):
    """Merge ``keys`` into /etc/docker/daemon.json, keeping every other key. The file is read
    once per deploy (by the docker role's state read, else the DaemonJson fact) and the merged
    result is remembered for the next caller, so roles that own different keys (docker,
    container_toolkit) never undo each other. Written only when the merge changes the content
    (compared as JSON, so the file's formatting alone never causes a write); returns the write
    operation or UNCHANGED."""
    cache = host_memo(host, "daemon_json")
    if "data" not in cache:
        cache["data"] = host.get_fact(DaemonJson)
    merged = render.merge(cache["data"], keys)
    if merged == cache["data"]:
        host.noop(f"{DAEMON_JSON} already holds {', '.join(keys)}")
        return UNCHANGED
    cache["data"] = merged
    return files.put(
        name=name, src=StringIO(render.daemon_json_text(merged)), dest=DAEMON_JSON, mode="644"
    )


def restart(name: str, changed, stale: bool = False) -> None:
    """Restart Docker when ``changed`` (an operation, e.g. a daemon.json write) changed, or when
    ``stale`` (the running daemon predates daemon.json)."""
    if changed is UNCHANGED and not stale:
        return
    _if = None if stale else changed.did_change
    systemd.service(name=name, service="docker", running=True, restarted=True, _if=_if)


def _daemon_keys(settings: DockerSettings) -> dict[str, Any]:
    """The deploy's daemon.json keys: Docker's and, where the container toolkit role runs, its
    runtime (which it merges again, finding nothing to change). Docker resolves a runtime's
    executable when a container starts, so the entry may come before the toolkit's packages."""
    from roles.container_toolkit import ContainerToolkitSettings  # a cycle
    from roles.container_toolkit import render as toolkit

    keys = dict(settings.daemon_options)
    toolkit_settings = ContainerToolkitSettings.from_host(host)
    if toolkit_settings.enabled:
        keys = render.merge(keys, toolkit.runtime_keys(toolkit_settings))
    return keys


def _users(host, settings: DockerSettings) -> list[str]:
    """The admin user and ``docker_users``: the docker group's wanted members."""
    return list(dict.fromkeys([BaseSettings.from_host(host).admin_user, *settings.users]))


def _read_spec(settings: DockerSettings, users: list[str]) -> dict:
    return dict(
        # The repository's files have the same paths on every release (only their text differs).
        paths=apt_repo.paths(render.docker_repo(settings, DEBIAN_12)),
        packages=[*settings.removed_packages, *settings.engine_packages],
        units=["docker"],
        probe=facts.probe(users),
    )


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host``."""
    settings = DockerSettings.from_host(host)
    return [host_state.request(**_read_spec(settings, _users(host, settings)))]


@deploy("Docker")
def install():
    """Ensures the Docker engine and compose from the configured source (Docker's repository,
    with Debian's conflicting packages removed first, or Debian's docker.io + docker-compose),
    the deploy's keys merged into /etc/docker/daemon.json without touching the others (Docker is
    restarted only when that file changed), the service enabled and running, and the admin user
    and ``docker_users`` in the docker group.

    Example, in your own deploy file:

    .. code:: python

        from roles import docker

        docker.install()  # settings: docker_* in group_data/ai_guests.py
    """
    settings = DockerSettings.from_host(host)
    repo = render.docker_repo(settings, profile(host, allowed=(DEBIAN,)))
    users = _users(host, settings)
    state = host_state.read(**_read_spec(settings, users))
    probe = facts.parse_probe(state.probe)
    host_memo(host, "daemon_json")["data"] = probe.daemon_json

    unknown = [u for u in settings.users if u not in probe.users]
    if unknown:
        raise DeployError(
            f"docker_users names users that do not exist on {host.name}: {', '.join(unknown)}; "
            "create them first or remove them from docker_users"
        )

    host_state.packages_absent(
        state, "remove the other source's packages first", settings.removed_packages
    )
    if settings.source == "docker":
        repo_ops = apt_repo.add(repo, state)
        missing = host_state.missing(state, settings.engine_packages)
        apt_repo.refresh_index("Docker", repo_ops, missing)
    else:
        apt_repo.refresh_index("Docker", apt_repo.remove(repo, state), [])

    # Written before the packages, so a fresh engine starts with it: with the container
    # toolkit's runtime too, so the file is written once and a fresh engine never restarts.
    daemon = merge_daemon_json("merge the deploy's keys into daemon.json", _daemon_keys(settings))
    host_state.packages(state, f"engine and compose ({settings.source})", settings.engine_packages)
    host_state.service(state, "service enabled and running", "docker")
    # A daemon that is not running yet starts with the new file (service step above).
    running = state.units.get("docker", ("", ""))[1] == "active"
    restart(
        "restart to apply daemon.json",
        daemon if running else UNCHANGED,
        stale=running and probe.daemon_json_newer,
    )

    for user in users:
        if user in probe.group_members:
            continue
        server.user(
            name=f"{user} in the docker group",
            user=user,
            groups=["docker"],
            append=True,
            ensure_home=False,
        )
