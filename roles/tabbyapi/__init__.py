"""tabbyAPI on the Debian 12 AI guest: a pinned checkout, its virtualenv, config.yml and the API
keys from the user's secrets, EXL3 models from Hugging Face, and a systemd service."""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles.common import gpu, host_state, prefetch, secrets
from roles.common.host_state import UNCHANGED, State
from roles.common.platform import DEBIAN, os_family
from roles.common.services import (
    client_address,
    kept_secret,
    private_log,
    redact_keys_sed,
    service_listen,
    system_user,
    unit_lifecycle,
    wait_until_answering,
)
from roles.hf_tools import models
from roles.nvidia_driver.settings import guest_driver
from roles.tabbyapi import facts, render
from roles.tabbyapi.facts import TabbyapiState
from roles.tabbyapi.settings import API_KEY_SECRET, TabbyapiSettings

__all__ = ["TabbyapiSettings", "api_keys", "host_problems", "install"]

SUPPORTED_PYTHON = {"cu12": ((3, 10), (3, 13)), "cu13": ((3, 12), (3, 14))}
# CUDA 13's wheels run on driver 580 or newer only (CUDA 13.0 release notes; unlike CUDA 12.x,
# which runs on 525+ by minor-version compatibility).
CU13_MIN_DRIVER = 580
PACKAGES = ["curl", "logrotate"]


@host_state.plain_packages("ai_guests")
def plain_packages(host_) -> list[str]:
    """Installed with the base role's packages (one transaction on a fresh guest)."""
    return PACKAGES if TabbyapiSettings.from_host(host_).enabled else []


def host_problems(host_) -> list[str]:
    """What the host's release refuses in valid settings ("key: why"): the cu13 wheels on a
    driver older than CUDA 13 runs on (source 'debian' installs the release's own: 535 or 550),
    checked before anything runs (roles/validate.py)."""
    found = guest_driver(host_)
    settings = TabbyapiSettings.from_host(host_)
    if found is None or not (
        settings.enabled and settings.git_url and "cu13" in settings.pip_extras
    ):
        return []
    driver, release = found
    if driver.driver_branch(release) >= CU13_MIN_DRIVER:
        return []
    return [
        f"{TabbyapiSettings.key('pip_extras')}: {driver.branch_origin(release)}, but the cu13 "
        f"wheels (CUDA 13) need driver {CU13_MIN_DRIVER} or newer and tabbyAPI would not start; "
        "use cu12, or nvidia_driver_source = 'nvidia' (the default) with nvidia_driver_branch "
        f"{CU13_MIN_DRIVER} or newer"
    ]


def api_keys() -> tuple[str, str]:
    """(api_key, admin_key) from the user's secrets, generated once if not given."""
    return secrets.get_or_create(API_KEY_SECRET), secrets.get_or_create("tabbyapi_admin_key")


def install_stamp(settings: TabbyapiSettings) -> str:
    """What a pip install was for: a change of ref or extras reinstalls. Never ends in blanks:
    the probe reads it back through the shell's `$(cat ...)`, which drops them."""
    return f"{settings.git_ref} {','.join(sorted(settings.pip_extras)) or 'base'}"


def hf_token_path(settings: TabbyapiSettings) -> str:
    return f"{render.hf_home(settings)}/token"


def _folders(settings: TabbyapiSettings) -> list[tuple[str, str, str]]:
    """(path, owner:group, mode) of every folder the role keeps."""
    user = settings.user
    return [
        *models.service_folders(user, render.home(settings), settings.model_dir),
        (render.LOG_DIR, f"{user}:{user}", "700"),
        (render.CONFIG_DIR, f"root:{user}", "750"),
    ]


def _links(settings: TabbyapiSettings) -> dict[str, str]:
    """tabbyAPI reads config.yml and api_tokens.yml from its working directory, the release's
    read-only checkout, and writes logs/ there (upstream's .gitignore lists all three): each is
    a link, to /etc/tabbyapi and to the service user's private log folder."""
    if not settings.git_url:
        return {}
    return {
        f"{settings.src}/config.yml": render.CONFIG_FILE,
        f"{settings.src}/api_tokens.yml": render.TOKENS_FILE,
        f"{settings.src}/logs": render.LOG_DIR,
    }


def _read_spec(settings: TabbyapiSettings) -> dict:
    """Everything the role looks at on the guest."""
    return dict(
        paths=[
            render.CONFIG_FILE,
            render.TOKENS_FILE,
            render.UNIT_PATH,
            render.LOGROTATE_PATH,
            render.LOG_FILE,
            hf_token_path(settings),
        ],
        packages=PACKAGES,
        units=[render.UNIT],
        probe=facts.probe(
            src=settings.src,
            venv=settings.venv,
            ref=settings.git_ref,
            python=settings.python,
            user=settings.user,
            model_dir=settings.model_dir,
            folders=[folder for _, _, folder in settings.downloads()],
            links=list(_links(settings)),
            current=settings.current,
            lock=settings.lock,
        ),
        dirs=[path for path, _, _ in _folders(settings)],
    )


@prefetch.reader("ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`install` reads on ``host``."""
    settings = TabbyapiSettings.from_host(host)
    return [host_state.request(**_read_spec(settings))] if settings.enabled else []


def _read_state(settings: TabbyapiSettings) -> tuple[State, TabbyapiState]:
    state = host_state.read(**_read_spec(settings))
    return state, facts.parse_state(state.probe)


def _needs_gpu(settings: TabbyapiSettings) -> bool:
    """tabbyAPI needs the GPU unless launched without it (the lab-only CPU launch)."""
    return not settings.lab_unsafe_launch


def _check_host(settings: TabbyapiSettings, install: TabbyapiState) -> None:
    """Refuse, before any change, what the guest itself rules out (interpreter, GPU count)."""
    extra = "cu13" if "cu13" in settings.pip_extras else "cu12"
    low, high = SUPPORTED_PYTHON[extra]
    if settings.git_url and install.python and not low <= install.python <= high:
        have = ".".join(map(str, install.python))
        raise DeployError(
            f"{host.name}: {settings.python} is Python {have}, but tabbyAPI's {extra} wheels need "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1]}; set tabbyapi_pip_extras or tabbyapi_python"
        )
    if install.gpus and len(settings.gpu_split) > install.gpus:
        raise DeployError(
            f"{host.name}: tabbyapi_gpu_split names {len(settings.gpu_split)} GPUs but the guest "
            f"has {install.gpus}; give one share per GPU"
        )
    if install.gpus and settings.lab_unsafe_launch:
        raise DeployError(
            f"{host.name}: {settings.key('lab_unsafe_launch')} is for a lab without a GPU; the "
            f"guest has {install.gpus}: set it False (and {settings.key('pip_extras')} to cu12)"
        )
    if install.gpus == 1 and settings.tensor_parallel:
        raise DeployError(
            f"{host.name}: tabbyapi_tensor_parallel needs several GPUs; the guest has one"
        )


def _user_and_folders(settings: TabbyapiSettings, state: State, install: TabbyapiState) -> None:
    system_user(settings.user, render.home(settings), install.user_exists)
    for path, owner, mode in _folders(settings):
        host_state.directory(state, path, path, mode, owner)
    private_log(state, render.LOG_FILE, settings.user)


def _checkout(settings: TabbyapiSettings, install: TabbyapiState):
    """The pinned ref checked out (detached) in its release folder, unless it already is."""
    assert settings.git_url, "called only when tabbyapi_git_url is set"
    if install.head and install.ref == install.head and install.origin == settings.git_url:
        return UNCHANGED
    q = shlex.quote
    src, url, ref = q(settings.src), q(settings.git_url), settings.git_ref
    git = f"git -C {src}"
    resolve = (
        f"{git} rev-parse -q --verify {q(ref + '^{commit}')} || "
        f"{git} rev-parse -q --verify {q('origin/' + ref + '^{commit}')}"
    )
    return server.shell(
        name=f"checkout of {ref}",
        commands=[
            f"test -d {src}/.git || {{ mkdir -p {q(settings.release_dir)} && "
            f"git clone --quiet --no-checkout {url} {src}; }}",
            f"{git} remote set-url origin {url}",
            f"{git} rev-parse -q --verify {q(ref + '^{commit}')} >/dev/null || "
            f"{git} fetch --quiet --tags origin '+refs/heads/*:refs/remotes/origin/*'",
            f"commit=$({resolve}) || {{ echo {q(f'{ref} is not in {settings.git_url}')} >&2; "
            "exit 1; }; "
            f'{git} -c advice.detachedHead=false checkout --quiet --force --detach "$commit"',
        ],
    )


def _dependencies(settings: TabbyapiSettings, install: TabbyapiState, checkout):
    """tabbyAPI's dependencies for the chosen extras in the release's virtualenv, held to the
    release's lock when it has one (a reinstall gets what answered before)."""
    stamp = install_stamp(settings)
    if install.installed == stamp and checkout is UNCHANGED:
        return UNCHANGED
    venv, q = settings.venv, shlex.quote
    extras = ",".join(sorted(settings.pip_extras))
    target = f'"$tmp"{q(f"[{extras}]") if extras else ""}'
    return server.shell(
        name=f"Python dependencies ({', '.join(settings.pip_extras) or 'base'})",
        commands=[
            f"test -x {q(venv)}/bin/python || {q(settings.python)} -m venv {q(venv)}",
            # From an export of the checkout: pip builds in the source folder (build/,
            # tabbyAPI.egg-info), which would dirty the pinned checkout. The cu12/cu13 extras
            # pin torch and exllamav3 wheels by URL (PyTorch's index, exllamav3's GitHub
            # releases); everything else comes from PyPI.
            f"set --; [ -f {q(settings.lock)} ] && set -- -c {q(settings.lock)}; "
            f'tmp=$(mktemp -d) && git -C {q(settings.src)} archive HEAD | tar -x -C "$tmp" && '
            f"{q(venv)}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir "
            f'--upgrade "$@" {target}; rc=$?; rm -rf "$tmp"; exit $rc',
            f"echo {q(stamp)} > {q(venv + '/' + render.INSTALL_STAMP)}",
        ],
        _if=[lambda: install.installed != stamp or checkout.did_change()],
    )


def _trial(settings: TabbyapiSettings) -> str:
    """A shell script that starts the wanted release beside the running one (as the service
    user, on a free loopback port, without a model) and fails with its redacted log lines unless
    it answers /health: what `current` is switched on."""
    q = shlex.quote
    log = f"{render.LOG_DIR}/trial.log"
    env = (
        f"HF_HOME={q(render.hf_home(settings))} TABBY_NETWORK_HOST=127.0.0.1 "
        'TABBY_NETWORK_PORT="$port" TABBY_MODEL_MODEL_NAME= TABBY_DRAFT_MODEL_DRAFT_MODEL_NAME='
    )
    failed = q(
        f"tabbyAPI release {settings.release} did not answer /health on trial; the running "
        "release keeps serving. Last log lines:"
    )
    pick_port = (
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    )
    return (
        f"cd {q(settings.src)} && umask 077 && "
        f"port=$({q(settings.venv)}/bin/python -c {q(pick_port)}) && "
        f"{{ setpriv --reuid={q(settings.user)} --regid={q(settings.user)} --init-groups "
        f"env {env} {q(settings.venv)}/bin/python main.py > {log} 2>&1 & }}; pid=$!; ok=no; "
        f"end=$(( $(date +%s) + {min(settings.start_timeout, 300)} )); "
        'while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do '
        'if curl -fsS -o /dev/null -m 5 "http://127.0.0.1:$port/health" 2>/dev/null; then '
        'ok=yes; break; fi; sleep 1; done; kill "$pid" 2>/dev/null; wait "$pid"; '
        f'[ "$ok" = yes ] || {{ {{ echo {failed}; tail -n 30 {log} | {redact_keys_sed()}; }} '
        f">&2; rm -f {log}; exit 1; }}; rm -f {log}"
    )


def _switch(settings: TabbyapiSettings, install: TabbyapiState):
    """Point <install_dir>/current at the wanted release. With a release already running, the
    new one must first answer /health on trial; the one it replaces is kept (to switch back by
    hand), older ones are removed."""
    if install.current == settings.release_dir:
        return UNCHANGED
    q = shlex.quote
    current, new = q(settings.current), q(settings.release_dir)
    commands = [_trial(settings)] if install.current else []
    commands.append(f"ln -sfn {new} {current}.new && mv -T {current}.new {current}")
    if install.current:
        keep = f"{new}|{q(install.current)}"
        commands.append(
            f'for d in {q(settings.install_dir)}/releases/*; do case "$d" in {keep}) ;; '
            '*) rm -rf -- "$d" ;; esac; done'
        )
    return server.shell(name=f"run release {settings.release}", commands=commands)


def _lock(settings: TabbyapiSettings, install: TabbyapiState) -> None:
    """Record the release's dependencies once it answered /health: reinstalls reuse them."""
    if install.locked:
        return
    q = shlex.quote
    lock = q(settings.lock)
    server.shell(
        name=f"lock of release {settings.release} (pip freeze)",
        commands=[
            f"mkdir -p {q(settings.install_dir + '/locks')}",
            f"{q(settings.venv)}/bin/pip freeze --disable-pip-version-check --exclude tabbyAPI "
            f"> {lock}.tmp && mv {lock}.tmp {lock}",
        ],
    )


def _release(settings: TabbyapiSettings, install: TabbyapiState) -> list:
    """The wanted release built beside the running one and switched to; returns the ops that
    need a restart."""
    checkout = _checkout(settings, install)
    for path, target in _links(settings).items():
        if install.links.get(path) != target:
            files.link(name=f"{path.rsplit('/', 1)[1]} in the checkout", path=path, target=target)
    dependencies = _dependencies(settings, install, checkout)
    return [checkout, dependencies, _switch(settings, install)]


def _config_files(settings: TabbyapiSettings, state: State, install, listen: str) -> list:
    """config.yml, the keys and the Hugging Face token; returns the ops that need a restart."""
    user = settings.user
    config = host_state.put(
        state,
        "config.yml",
        render.CONFIG_FILE,
        render.config_yml(settings, listen),
        mode="640",
        owner=f"root:{user}",
    )
    tokens = render.api_tokens_yml(*api_keys())
    secrets.keep_operation()  # generated keys reach secrets.yml before any host uses them
    # Not a restart trigger: tabbyAPI re-reads api_tokens.yml when it changes (common/auth.py).
    kept_secret(state, "api_tokens.yml (keys from the secrets)", render.TOKENS_FILE, tokens, user)
    models.token_file(state, hf_token_path(settings), user, secrets.get("hf_token"))
    return [config]


def _models(settings: TabbyapiSettings, install: TabbyapiState) -> list:
    """Each wanted model downloaded and checked (roles/hf_tools/models.py). (tabbyAPI's own
    `main.py download` is not used: it logs the error and exits 0, common/actions.py.)"""
    hf_home = render.hf_home(settings)
    return models.download(
        settings.user, hf_home, settings.model_dir, settings.downloads(), install.models
    )


@deploy("tabbyAPI")
def install():
    """Ensures the tabbyAPI service: a system user; the pinned checkout and its virtualenv (when
    a source is set); /etc/tabbyapi/config.yml from the settings and api_tokens.yml (mode 0600,
    the service user's) from the secrets, authentication always on; the models downloaded and
    checked; a systemd unit logging to a 0600 file, enabled, restarted when anything it runs
    changed, and answering /health before the deploy goes on.

    Example, in your own deploy file:

    .. code:: python

        from roles import tabbyapi

        tabbyapi.install()  # settings: tabbyapi_* in group_data/ai_guests.py
    """
    settings = TabbyapiSettings.from_host(host)
    if not settings.enabled:
        return
    os_family(host, allowed=(DEBIAN,))
    state, install_state = _read_state(settings)
    listen = service_listen(settings.host, settings.key("host"), install_state.address)
    _check_host(settings, install_state)

    host_state.packages(state, "curl and logrotate", PACKAGES)
    _user_and_folders(settings, state, install_state)
    # Keys and config first: tabbyAPI writes a fresh api_tokens.yml wherever one is missing.
    restart_on = _config_files(settings, state, install_state, listen)
    if settings.git_url:
        restart_on += _release(settings, install_state)
    restart_on += _models(settings, install_state)
    unit = host_state.put(state, "systemd unit", render.UNIT_PATH, render.unit(settings))
    host_state.put(state, "log rotation", render.LOGROTATE_PATH, render.logrotate(settings))
    if not settings.git_url:
        logger.warning(
            f"{host.name}: tabbyapi_git_url is None: tabbyAPI's code is not installed, so the "
            "service is enabled but not started"
        )
    start_and_wait(settings, state, install_state, listen, unit, restart_on)


def start_and_wait(
    settings: TabbyapiSettings, state: State, install: TabbyapiState, listen: str, unit, restart_on
) -> None:
    """The one place the service is (re)started and waited on, and its release then locked. It
    runs only when its code is installed (a source is set), and never while the driver waits
    for a reboot unless it runs without a GPU (roles/common/gpu)."""
    runnable = bool(settings.git_url)
    if runnable and _needs_gpu(settings):
        runnable = gpu.may_start(host, "tabbyAPI")
    started = unit_lifecycle(state, "tabbyAPI", render.UNIT, unit, runnable, restart_on=restart_on)
    if not runnable:
        return
    logs = (
        f"tail -n 30 {render.LOG_FILE} 2>/dev/null | {redact_keys_sed()}; "
        f"journalctl -u {render.UNIT} -n 30 --no-pager 2>/dev/null | {redact_keys_sed()}"
    )
    # Only after a (re)start: a converged host sends nothing for it (one round trip per run).
    host_state.after(
        started,
        wait_until_answering,
        name="answers /health",
        service="tabbyAPI",
        url=f"http://{client_address(listen)}:{settings.port}/health",
        timeout=settings.start_timeout,
        logs_command=logs,
    )
    _lock(settings, install)
