"""Ollama on the Debian 12 AI guest: a compose project with a pinned image, the GPU reserved,
published on one address, started at boot by systemd, its models pulled through its API."""

from __future__ import annotations

import json
import shlex

from pyinfra import host, logger
from pyinfra.api import deploy, operation
from pyinfra.operations import server

from roles.common import gpu, host_state, prefetch
from roles.common.platform import DEBIAN, os_family
from roles.common.services import (
    client_address,
    listen_address,
    unit_lifecycle,
    wait_until_answering,
)
from roles.docker import compose_command
from roles.firewall.settings import FirewallSettings
from roles.nvidia_driver.settings import guest_driver
from roles.ollama import facts, render
from roles.ollama.facts import OllamaModels, canonical_model
from roles.ollama.settings import OllamaSettings, driver_too_old

__all__ = ["OllamaSettings", "host_problems", "install", "pull_missing_models"]


def host_problems(host_) -> list[str]:
    """What the host's release refuses in valid settings ("key: why"): the driver branch Ollama
    gets (source 'debian' installs the release's own), checked before anything runs
    (roles/validate.py). An unsupported release is the roles' to refuse."""
    found = guest_driver(host_)
    settings = OllamaSettings.from_host(host_)
    if found is None or not settings.enabled:
        return []
    return driver_too_old(settings, *found)


@operation()
def pull_missing_models(api: str, models: list[str], timeout: int):
    """Pull (POST /api/pull, stream false) each of ``models`` that GET /api/tags lacks.

    The list is read when the operation runs, after the service answered, so a model already
    there is never pulled again and a converged host reports no change.
    """
    present = host.get_fact(OllamaModels, api=api) or set()
    q = shlex.quote
    for model in models:
        if canonical_model(model) in present:
            host.noop(f"Ollama has {model}")
            continue
        body = json.dumps({"model": model, "stream": False})
        yield (
            f"out=$(curl -sS --fail-with-body -m {int(timeout)} -X POST "
            f"-H 'Content-Type: application/json' -d {q(body)} {q(api + '/api/pull')}) "
            f'&& echo "$out" | grep -q \'"success"\' '
            f'|| {{ echo {q(f"pulling {model} failed:")} "$out" >&2; exit 1; }}'
        )


def _image(settings: OllamaSettings, have_image: bool) -> bool:
    """Get the image if Docker lacks it: load the archive, else pull. Whether it will be there."""
    if have_image:
        return True
    q = shlex.quote
    image = q(settings.image)
    if settings.image_archive:
        archive = q(settings.image_archive)
        missing = q(f"{settings.image_archive} is missing: copy the `docker save` archive there")
        wrong = q(f"{settings.image_archive} does not hold {settings.image}")
        server.shell(
            name=f"load {settings.image} from {settings.image_archive}",
            commands=[
                f"test -f {archive} || {{ echo {missing} >&2; exit 1; }}",
                f"docker load --quiet --input {archive}",
                f"docker image inspect {image} >/dev/null || {{ echo {wrong} >&2; exit 1; }}",
            ],
        )
        return True
    if settings.pull_image:
        server.shell(name=f"pull {settings.image}", commands=[f"docker pull --quiet {image}"])
        return True
    logger.warning(
        f"{host.name}: {settings.image} is not on the guest, ollama_pull_image is False and no "
        "ollama_image_archive is set: the Ollama stack is installed but not started"
    )
    return False


def _folders(settings: OllamaSettings) -> dict[str, str]:
    return {settings.project_dir: "755", settings.data_dir: "750"}


def _publish(host, settings: OllamaSettings) -> str:
    """The published address, needed for the probe's /api/tags URL: an explicit one is known,
    so is 'auto' behind the firewall (all addresses); without it 'auto' costs a round trip."""
    filtered = FirewallSettings.from_host(host).enabled
    return listen_address(settings.bind_address, settings.key("bind_address"), filtered)


def _read_spec(settings: OllamaSettings, api: str) -> dict:
    return dict(
        paths=[render.compose_path(settings), render.UNIT_PATH],
        units=[render.UNIT],
        probe=facts.probe(settings.image, f"{api}/api/tags"),
        dirs=list(_folders(settings)),
    )


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host``."""
    settings = OllamaSettings.from_host(host)
    if not settings.enabled:
        return []
    api = f"http://{client_address(_publish(host, settings))}:{settings.port}"
    return [host_state.request(**_read_spec(settings, api))]


@deploy("Ollama")
def install():
    """Ensures the Ollama compose project: the pinned image (pulled, or loaded from an archive),
    compose.yaml generated from the settings (GPU reserved, port published on one address, the
    models in a host folder kept across re-deploys), a systemd unit that brings it up at boot
    after Docker, the API answering, and every wanted model present (pulled only when missing).

    Example, in your own deploy file:

    .. code:: python

        from roles import ollama

        ollama.install()  # settings: ollama_* in group_data/ai_guests.py
    """
    settings = OllamaSettings.from_host(host)
    if not settings.enabled:
        return
    os_family(host, allowed=(DEBIAN,))
    compose = compose_command()
    compose_path = render.compose_path(settings)
    folders = _folders(settings)
    publish = _publish(host, settings)
    api = f"http://{client_address(publish)}:{settings.port}"
    state = host_state.read(**_read_spec(settings, api))
    found = facts.parse_state(state.probe)
    runnable = _image(settings, found.image)
    # With the GPU reserved, never started or waited on while the driver waits for a reboot.
    if runnable and settings.gpu:
        runnable = gpu.may_start(host, "Ollama (GPU)")

    for path, mode in folders.items():
        host_state.directory(state, path, path, mode, owner=None)
    compose_file = host_state.put(
        state, "compose.yaml", compose_path, render.compose_yaml(settings, publish)
    )
    host_state.after(
        [compose_file],
        server.shell,
        name="compose.yaml is valid",
        commands=[f"{render.compose_invocation(compose, settings)} config --quiet"],
    )
    unit = host_state.put(state, "systemd unit", render.UNIT_PATH, render.unit(settings, compose))
    started = unit_lifecycle(state, "Ollama", render.UNIT, unit, runnable, reload_on=[compose_file])
    if not runnable:
        return
    have = found.models or set()
    missing = any(canonical_model(m) not in have for m in settings.models)
    compose_logs = f"{render.compose_invocation(compose, settings)} logs --no-color --tail 30"
    # After a (re)start, or before pulling into it: a converged host sends nothing for it.
    host_state.after(
        started,
        wait_until_answering,
        force=missing,
        name="answers /api/version",
        service="Ollama",
        url=f"{api}/api/version",
        timeout=settings.start_timeout,
        logs_command=(
            f"{compose_logs} 2>&1; journalctl -u {render.UNIT} -n 30 --no-pager 2>/dev/null"
        ),
    )
    if missing:
        pull_missing_models(
            name=f"models {', '.join(settings.models)}",
            api=api,
            models=settings.models,
            timeout=settings.pull_timeout,
        )
