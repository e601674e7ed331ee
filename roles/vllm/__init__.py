"""vLLM on the AI guest, off by default (vllm_enabled): a pinned `vllm` in its own virtualenv,
its model from Hugging Face at a pinned commit, config.yaml from the settings, the API key from
the user's secrets in a 0600 environment file, and a systemd unit that runs only with a GPU."""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server

from roles.common import gpu, host_state, prefetch, secrets
from roles.common.host_state import UNCHANGED, State
from roles.common.platform import DEBIAN, os_family
from roles.common.services import (
    client_address,
    kept_secret,
    private_log,
    service_listen,
    system_user,
    unit_lifecycle,
    wait_until_answering,
)
from roles.hf_tools import models
from roles.nvidia_driver.settings import guest_driver
from roles.vllm import facts, render
from roles.vllm.facts import VllmState
from roles.vllm.settings import API_KEY_SECRET, VllmSettings, driver_too_old

__all__ = ["VllmSettings", "api_key", "host_problems", "install"]

SUPPORTED_PYTHON = ((3, 11), (3, 14))  # the pinned release's Requires-Python
PACKAGES = ["curl", "logrotate", "python3-venv"]
# What vLLM needs to start, not only to install: Triton (torch.compile's kernels, on by default)
# builds its CUDA launcher at the first start with a C compiler against Python.h
# (triton/runtime/build.py); without them the start fails, "Python.h: No such file or
# directory" (vllm-project/vllm#27890). Left out with the lab-only skip, like vllm itself.
BUILD_PACKAGES = ["gcc", "python3-dev"]


def api_key() -> str:
    """The key clients send, from the user's secrets; generated once if not given."""
    return secrets.get_or_create(API_KEY_SECRET)


def host_problems(host_) -> list[str]:
    """What the host's release refuses in valid settings ("key: why"): the driver branch the
    guest gets (source 'debian' installs the release's own), checked before anything runs
    (roles/validate.py). An unsupported release is the role's to refuse."""
    found = guest_driver(host_)
    return [] if found is None else driver_too_old(VllmSettings.from_host(host_), *found)


def _folders(settings: VllmSettings) -> list[tuple[str, str, str]]:
    """(path, owner:group, mode) of every folder the role keeps: models, caches, logs, config,
    code."""
    mine = f"{settings.user}:{settings.user}"
    return models.service_folders(settings.user, render.home(settings), settings.model_dir) + [
        (render.cache_dir(settings), mine, "700"),
        (render.LOG_DIR, mine, "700"),
        (render.CONFIG_DIR, "root:root", "755"),
        (settings.install_dir, "root:root", "755"),
    ]


def _read_spec(settings: VllmSettings) -> dict:
    """Everything the role looks at on the guest."""
    token = f"{render.hf_home(settings)}/token"
    files = [render.CONFIG_FILE, render.ENV_FILE, render.UNIT_PATH, render.LOGROTATE_PATH]
    folders = [folder for _, _, folder in settings.downloads()]
    probe = facts.probe(settings.venv, settings.python, settings.user, settings.model_dir, folders)
    return dict(
        paths=[*files, render.LOG_FILE, token], packages=_packages(settings), units=[render.UNIT],
        probe=probe, dirs=[path for path, _, _ in _folders(settings)],
    )  # fmt: skip


def _packages(settings: VllmSettings) -> list[str]:
    return PACKAGES if settings.lab_skip_install else PACKAGES + BUILD_PACKAGES


@prefetch.reader("ai_guests")
def reads(host_) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host_`` (nothing unless vllm_enabled)."""
    settings = VllmSettings.from_host(host_)
    return [host_state.request(**_read_spec(settings))] if settings.enabled else []


def _read_state(settings: VllmSettings) -> tuple[State, VllmState]:
    state = host_state.read(**_read_spec(settings))
    return state, facts.parse_state(state.probe)


def _check_host(settings: VllmSettings, found: VllmState) -> None:
    """Refuse, before any change, what the guest itself rules out (interpreter, GPU count, the
    lab-only setting where a GPU exists)."""
    if found.gpus and settings.lab_skip_install:
        raise DeployError(
            f"{host.name}: {settings.key('lab_skip_install')} is for a lab without a GPU; the "
            f"guest has {found.gpus}: set it False so vLLM is installed"
        )
    low, high = SUPPORTED_PYTHON
    if not settings.lab_skip_install and found.python and not low <= found.python <= high:
        have = ".".join(map(str, found.python))
        raise DeployError(
            f"{host.name}: {settings.python} is Python {have}, but vllm {settings.version} needs "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1]}; set vllm_python to another interpreter"
        )
    if found.gpus and settings.tensor_parallel_size > found.gpus:
        raise DeployError(
            f"{host.name}: vllm_tensor_parallel_size is {settings.tensor_parallel_size} but the "
            f"guest has {found.gpus} GPU(s); set it to {found.gpus} or fewer"
        )


def _package(settings: VllmSettings, found: VllmState):
    """vllm at the pinned version in its virtualenv, from the configured index."""
    stamp = render.install_stamp(settings)
    if found.installed == stamp:
        return UNCHANGED
    q = shlex.quote
    venv = q(settings.venv)
    return server.shell(
        name=f"vllm {settings.version} (with CUDA torch: several GB)",
        commands=[
            f"test -x {venv}/bin/python || {q(settings.python)} -m venv {venv}",
            f"{venv}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir "
            f"--index-url {q(settings.pip_index_url)} {q('vllm==' + settings.version)}",
            f"echo {q(stamp)} > {q(settings.venv + '/' + render.INSTALL_STAMP)}",
        ],
    )


def _files(settings: VllmSettings, state: State, listen: str) -> tuple[list, list]:
    """config.yaml, the environment file with the key, the Hugging Face token; returns the ops
    that need a restart, and the unit file's op."""
    config = host_state.put(
        state, "config.yaml", render.CONFIG_FILE, render.config_yaml(settings, listen)
    )
    key = render.environment(api_key())
    secrets.keep_operation()  # a generated key reaches secrets.yml before any host uses it
    # root's: systemd reads the EnvironmentFile before it drops to the service user.
    env = kept_secret(state, "vllm.env (the key from the secrets)", render.ENV_FILE, key, "root")
    token = f"{render.hf_home(settings)}/token"
    models.token_file(state, token, settings.user, secrets.get("hf_token"))
    unit = host_state.put(state, "systemd unit", render.UNIT_PATH, render.unit(settings))
    host_state.put(state, "log rotation", render.LOGROTATE_PATH, render.logrotate(settings))
    return [config, env], [unit]


@deploy("vLLM")
def install():
    """Ensures, when vllm_enabled, the vLLM service: a system user with its folders (models,
    caches, a 0700 log folder); the pinned vllm in its virtualenv; the model downloaded at its
    pinned commit and checked; /etc/vllm/config.yaml from the settings and the API key in a
    0600 environment file (authentication always on); a systemd unit that starts only where the
    NVIDIA driver drives a GPU, enabled, restarted when anything it runs changed, and answering
    /health before the deploy goes on.

    Example, in your own deploy file:

    .. code:: python

        from roles import vllm

        vllm.install()  # does nothing unless vllm_enabled = True (group_data/ai_guests.py)
    """
    settings = VllmSettings.from_host(host)
    if settings.enabled:
        os_family(host, allowed=(DEBIAN,))
        _install(settings)


def _install(settings: VllmSettings) -> None:
    state, found = _read_state(settings)
    _check_host(settings, found)
    listen = service_listen(settings.host, settings.key("host"), found.address)
    wanted = _packages(settings)
    host_state.packages(state, ", ".join(wanted), wanted)
    system_user(settings.user, render.home(settings), found.user_exists)
    for path, owner, mode in _folders(settings):
        host_state.directory(state, path, path, mode, owner)
    private_log(state, render.LOG_FILE, settings.user)
    restart_on, (unit,) = _files(settings, state, listen)
    if settings.lab_skip_install:
        logger.warning(
            f"{host.name}: vllm_lab_skip_install (lab only): vLLM and its model are not "
            "installed, so the service is enabled but not started"
        )
    else:
        restart_on.append(_package(settings, found))
        restart_on += models.download(
            settings.user,
            render.hf_home(settings),
            settings.model_dir,
            settings.downloads(),
            found.models,
        )
    _start_and_wait(settings, state, listen, unit, restart_on)


def _start_and_wait(settings: VllmSettings, state: State, listen: str, unit, restart_on) -> None:
    """Start (or restart) the service and wait for /health, unless it is not installed or the
    driver waits for a reboot (roles/common/gpu); then it is only enabled."""
    runnable = not settings.lab_skip_install and gpu.may_start(host, "vLLM")
    started = unit_lifecycle(state, "vLLM", render.UNIT, unit, runnable, restart_on=restart_on)
    if not runnable:
        return
    logs = f"tail -n 30 {render.LOG_FILE}; journalctl -u {render.UNIT} -n 30 --no-pager"
    url = f"http://{client_address(listen)}:{settings.port}/health"
    host_state.after(
        started, wait_until_answering,
        name="answers /health", service="vLLM", url=url, timeout=settings.start_timeout,
        logs_command=f"{{ {logs}; }} 2>/dev/null",
    )  # fmt: skip
