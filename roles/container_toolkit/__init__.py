"""NVIDIA container toolkit on the Debian 12 AI guest: Docker containers get the GPU."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from roles import docker
from roles.common import apt_repo, host_state, prefetch
from roles.common.platform import DEBIAN, os_family
from roles.container_toolkit import facts, render
from roles.container_toolkit.settings import ContainerToolkitSettings

__all__ = ["ContainerToolkitSettings", "install"]


def _read_spec(settings: ContainerToolkitSettings) -> dict:
    return dict(
        paths=apt_repo.paths(render.toolkit_repo(settings)),
        packages=settings.packages,
        probe=facts.probe(settings.cdi_spec),
    )


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host`` (nothing when the role is off)."""
    settings = ContainerToolkitSettings.from_host(host)
    return [host_state.request(**_read_spec(settings))] if settings.enabled else []


@deploy("NVIDIA container toolkit")
def install():
    """Ensures NVIDIA's libnvidia-container repository and nvidia-container-toolkit, the nvidia
    runtime merged into /etc/docker/daemon.json (Docker restarted only when that file changed),
    and, where a GPU is present and the driver loaded, a CDI spec that matches the loaded driver.
    Does nothing when ``container_toolkit_enabled`` is False.

    Example, in your own deploy file:

    .. code:: python

        from roles import container_toolkit

        container_toolkit.install()  # settings: container_toolkit_* in group_data/ai_guests.py
    """
    settings = ContainerToolkitSettings.from_host(host)
    if not settings.enabled:
        host.noop("container_toolkit_enabled is False: the NVIDIA container toolkit is skipped")
        return
    os_family(host, allowed=(DEBIAN,))
    repo = render.toolkit_repo(settings)
    state = host_state.read(**_read_spec(settings))
    cdi = facts.parse_state(state.probe)

    repo_ops = apt_repo.add(repo, state)
    apt_repo.refresh_index(
        "NVIDIA container toolkit", repo_ops, host_state.missing(state, settings.packages)
    )
    packages = host_state.packages(state, "packages", settings.packages)

    # The same keys `nvidia-ctk runtime configure --runtime=docker` writes, merged through the
    # docker role so daemon.json is read once and other keys are kept.
    runtime = docker.merge_daemon_json(
        "nvidia runtime in daemon.json", render.runtime_keys(settings)
    )
    docker.restart("restart Docker for the runtime", runtime)

    if not cdi.gpus:
        host.noop("no NVIDIA GPU on this host: no CDI spec to generate")
    elif not cdi.driver_version:
        host.noop("the NVIDIA driver is not loaded yet (reboot pending): CDI spec after reboot")
    elif cdi.needs_spec() or packages is not host_state.UNCHANGED:
        server.shell(
            name="CDI spec for the loaded driver",
            commands=[f"nvidia-ctk cdi generate --output={settings.cdi_spec}"],
        )
