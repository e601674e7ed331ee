"""tabbyAPI on the Debian 12 AI guest: a pinned checkout, its virtualenv, config.yml and the API
keys from the user's secrets, EXL3 models from Hugging Face, and a systemd service."""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles.common import gpu, host_state, secrets
from roles.common.host_state import UNCHANGED, FileState, State
from roles.common.platform import DEBIAN, os_family
from roles.common.services import (
    client_address,
    listen_address,
    redact_keys_sed,
    secret_file,
    unit_lifecycle,
    wait_until_answering,
)
from roles.firewall.settings import FirewallSettings
from roles.hf_tools import hf_command
from roles.tabbyapi import facts, render
from roles.tabbyapi.facts import TabbyapiState
from roles.tabbyapi.settings import API_KEY_SECRET, TabbyapiSettings

__all__ = ["TabbyapiSettings", "api_keys", "install"]

SUPPORTED_PYTHON = {"cu12": ((3, 10), (3, 13)), "cu13": ((3, 12), (3, 14))}
PACKAGES = ["curl", "logrotate"]


def api_keys() -> tuple[str, str]:
    """(api_key, admin_key) from the user's secrets, generated once if not given."""
    return secrets.get_or_create(API_KEY_SECRET), secrets.get_or_create("tabbyapi_admin_key")


def install_stamp(settings: TabbyapiSettings) -> str:
    """What a pip install was for: a change of ref or extras reinstalls."""
    return f"{settings.git_ref} {','.join(sorted(settings.pip_extras))}"


def hf_token_path(settings: TabbyapiSettings) -> str:
    return f"{render.hf_home(settings)}/token"


def _folders(settings: TabbyapiSettings) -> list[tuple[str, str, str]]:
    """(path, owner:group, mode) of every folder the role keeps."""
    user, home = settings.user, render.home(settings)
    mine = f"{user}:{user}"
    return [
        (home, mine, "750"),
        (f"{home}/.cache", mine, "700"),
        (render.hf_home(settings), mine, "700"),
        (settings.model_dir, mine, "750"),
        (render.LOG_DIR, mine, "700"),
        (render.CONFIG_DIR, f"root:{user}", "750"),
    ]


def _links(settings: TabbyapiSettings) -> dict[str, str]:
    """tabbyAPI reads config.yml and api_tokens.yml from its working directory, the checkout
    (upstream's .gitignore lists both); the real files live in /etc/tabbyapi."""
    if not settings.git_url:
        return {}
    return {
        f"{settings.src}/config.yml": render.CONFIG_FILE,
        f"{settings.src}/api_tokens.yml": render.TOKENS_FILE,
    }


def _read_state(settings: TabbyapiSettings) -> tuple[State, TabbyapiState]:
    """Everything the role looks at on the guest, in one round trip."""
    state = host_state.read(
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
        ),
        dirs=[path for path, _, _ in _folders(settings)],
    )
    return state, facts.parse_state(state.probe)


def _needs_gpu(settings: TabbyapiSettings) -> bool:
    """tabbyAPI needs the GPU unless told to launch without it (developer.unsafe_launch skips
    its torch/CUDA check: a CPU-only launch, e.g. the lab's)."""
    developer = settings.config_overrides.get("developer", {})
    return not developer.get("unsafe_launch", False)


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
    if install.gpus == 1 and settings.tensor_parallel:
        raise DeployError(
            f"{host.name}: tabbyapi_tensor_parallel needs several GPUs; the guest has one"
        )


def _user_and_folders(settings: TabbyapiSettings, state: State, install: TabbyapiState) -> None:
    user = settings.user
    if not install.user_exists:
        q = shlex.quote
        server.shell(
            name=f"system user {user}",
            commands=[
                f"useradd --system --user-group --home-dir {q(render.home(settings))} "
                f"--shell /usr/sbin/nologin {q(user)}"
            ],
        )
    for path, owner, mode in _folders(settings):
        host_state.directory(state, path, path, mode, owner)
    log = state.files.get(render.LOG_FILE)
    if log is None or (log.mode, log.owner) != ("600", f"{user}:{user}"):
        files.file(
            name="its log file, readable by the service user only",
            path=render.LOG_FILE,
            user=user,
            group=user,
            mode="600",
        )


def _secret(state: State, name: str, path: str, content: str, user: str):
    """A 0600 file of the service user holding a secret, written only when it differs."""
    if state.files.get(path) == FileState("600", f"{user}:{user}", host_state.sha1(content)):
        return UNCHANGED
    return secret_file(name=name, path=path, content=content, user=user, group=user)


def _checkout(settings: TabbyapiSettings, install: TabbyapiState):
    """The pinned ref checked out (detached) in <install_dir>/src, unless it already is."""
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
            f"test -d {src}/.git || git clone --quiet --no-checkout {url} {src}",
            f"{git} remote set-url origin {url}",
            f"{git} rev-parse -q --verify {q(ref + '^{commit}')} >/dev/null || "
            f"{git} fetch --quiet --tags origin '+refs/heads/*:refs/remotes/origin/*'",
            f"commit=$({resolve}) || {{ echo {q(f'{ref} is not in {settings.git_url}')} >&2; "
            "exit 1; }; "
            f'{git} -c advice.detachedHead=false checkout --quiet --force --detach "$commit"',
        ],
    )


def _dependencies(settings: TabbyapiSettings, install: TabbyapiState, checkout):
    """tabbyAPI's dependencies for the chosen CUDA wheel set, in <install_dir>/venv."""
    stamp = install_stamp(settings)
    if install.installed == stamp and checkout is UNCHANGED:
        return UNCHANGED
    venv, q = settings.venv, shlex.quote
    target = q(f"{settings.src}[{','.join(sorted(settings.pip_extras))}]")
    return server.shell(
        name=f"Python dependencies ({', '.join(settings.pip_extras)})",
        commands=[
            f"test -x {q(venv)}/bin/python || {q(settings.python)} -m venv {q(venv)}",
            # The cu12/cu13 extras pin torch and exllamav3 wheels by URL (PyTorch's index and
            # exllamav3's GitHub releases); everything else comes from PyPI.
            f"{q(venv)}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir "
            f"--upgrade {target}",
            f"echo {q(stamp)} > {q(venv + '/' + render.INSTALL_STAMP)}",
        ],
        _if=[lambda: install.installed != stamp or checkout.did_change()],
    )


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
    _secret(state, "api_tokens.yml (keys from the secrets)", render.TOKENS_FILE, tokens, user)
    token = secrets.get("hf_token")
    if token:
        _secret(state, "Hugging Face token", hf_token_path(settings), token + "\n", user)
    else:
        host_state.absent(state, "no Hugging Face token", hf_token_path(settings))
    for path, target in _links(settings).items():
        if install.links.get(path) != target:
            files.link(name=f"{path.rsplit('/', 1)[1]} in the checkout", path=path, target=target)
    return [config]


def _models(settings: TabbyapiSettings, install: TabbyapiState) -> list:
    """Each wanted model downloaded with `hf` as the service user, then checked: a download that
    left no config.json or *.safetensors fails here instead of at the first request. (tabbyAPI's
    own `main.py download` is not used: it logs the error and exits 0, common/actions.py.)"""
    q = shlex.quote
    hf_home = render.hf_home(settings)
    ops = []
    for repo, revision, folder in settings.downloads():
        source = f"{repo}@{revision}"
        if install.models.get(folder) == source:
            continue
        path = f"{settings.model_dir}/{folder}"
        as_user = f"runuser -u {q(settings.user)} --"
        missing = (
            f"{path}: no config.json or *.safetensors after downloading {source} (check the repo, "
            "the revision, and the secret hf_token for gated repos)"
        )
        ops.append(
            server.shell(
                name=f"model {folder} from {source}",
                commands=[
                    f"{as_user} env HF_HOME={q(hf_home)} HF_HUB_DISABLE_TELEMETRY=1 "
                    f"{q(hf_command())} download {q(repo)} --revision {q(revision)} "
                    f"--local-dir {q(path)} --quiet",
                    f"test -f {q(path)}/config.json && ls {q(path)}/*.safetensors >/dev/null 2>&1"
                    f" || {{ echo {q(missing)} >&2; exit 1; }}",
                    f"{as_user} sh -c {q(f'echo {q(source)} > {q(path)}/{render.MODEL_STAMP}')}",
                ],
            )
        )
    return ops


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
    filtered = FirewallSettings.from_host(host).enabled
    listen = listen_address(settings.host, settings.key("host"), filtered, install_state.address)
    _check_host(settings, install_state)

    host_state.packages(state, "curl and logrotate", PACKAGES)
    _user_and_folders(settings, state, install_state)
    restart_on = []
    if settings.git_url:
        checkout = _checkout(settings, install_state)
        restart_on += [checkout, _dependencies(settings, install_state, checkout)]
    restart_on += _config_files(settings, state, install_state, listen)
    restart_on += _models(settings, install_state)
    unit = host_state.put(state, "systemd unit", render.UNIT_PATH, render.unit(settings))
    host_state.put(state, "log rotation", render.LOGROTATE_PATH, render.logrotate(settings))

    runnable = bool(settings.git_url)
    if not runnable:
        logger.warning(
            f"{host.name}: tabbyapi_git_url is None: tabbyAPI's code is not installed, so the "
            "service is enabled but not started"
        )
    # Never started, restarted or waited on while the driver waits for a reboot (roles/common/gpu).
    if runnable and _needs_gpu(settings):
        runnable = gpu.may_start(host, "tabbyAPI")
    unit_lifecycle(state, "tabbyAPI", render.UNIT, unit, runnable, restart_on=restart_on)
    if runnable:
        logs = (
            f"tail -n 30 {render.LOG_FILE} 2>/dev/null | {redact_keys_sed()}; "
            f"journalctl -u {render.UNIT} -n 30 --no-pager 2>/dev/null | {redact_keys_sed()}"
        )
        wait_until_answering(
            name="answers /health",
            service="tabbyAPI",
            url=f"http://{client_address(listen)}:{settings.port}/health",
            timeout=settings.start_timeout,
            logs_command=logs,
        )
