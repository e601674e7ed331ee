"""Checks of the hf_tools and tabbyapi roles on a real AI guest.

Checks of a running tabbyAPI skip, saying why, when its code is not installed (tabbyapi_git_url
None: no source was reachable) or when it does not run.
"""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from role_settings import enabled_settings, listen_on, settings_of

from roles.common.services import client_address
from roles.hf_tools.settings import HfToolsSettings
from roles.tabbyapi import render
from roles.tabbyapi.settings import TabbyapiSettings

# The key is read on the guest by the command itself: it never appears in a test's output.
API_KEY = f"$(sed -n 's/^api_key: //p' {render.TOKENS_FILE})"


@pytest.fixture
def tabby(host_data: dict) -> TabbyapiSettings:
    return enabled_settings(TabbyapiSettings, host_data)


@pytest.fixture
def listen(guest, tabby, host_data) -> str:
    return listen_on(guest, tabby.host, host_data)


@pytest.fixture
def running(guest, tabby, listen):
    """The guest, once tabbyAPI is installed and active (else the test is skipped)."""
    if not guest.file(f"{tabby.current}/src/main.py").exists:
        reason = (
            "tabbyapi_git_url is None (no source reachable)"
            if tabby.git_url is None
            else f"there is no release at {tabby.current}"
        )
        pytest.skip(f"tabbyAPI's code is not installed: {reason}")
    if not guest.service(render.UNIT).is_running:
        pytest.fail(f"{render.UNIT} is installed but not running")
    return guest


def curl(guest, url: str, *args: str) -> tuple[int, str]:
    """(HTTP status, body) of a request made on the guest."""
    out = guest.check_output(
        f"curl -sS -m 20 -w '\\n%{{http_code}}' {' '.join(args)} {shlex.quote(url)}"
    )
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_hf_cli_is_pinned_and_on_the_path(guest, host_data):
    settings = settings_of(HfToolsSettings, host_data)
    assert guest.file("/usr/local/bin/hf").linked_to == f"{settings.venv}/bin/hf"
    version = guest.check_output(
        f"{settings.venv}/bin/python -c 'import huggingface_hub as h; print(h.__version__)'"
    )
    assert version == settings.huggingface_hub_version
    assert guest.run("hf --help").rc == 0
    assert guest.package("git").is_installed


def test_service_user_and_folders(guest, tabby):
    user = guest.user(tabby.user)
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.uid < 1000
    for path, mode in ((tabby.model_dir, 0o750), (render.LOG_DIR, 0o700)):
        folder = guest.file(path)
        assert folder.is_directory and folder.user == tabby.user and folder.mode == mode, path


def test_config_yml_matches_the_settings_and_keeps_auth_on(guest, tabby, listen):
    config = guest.file(render.CONFIG_FILE)
    assert (config.user, config.group, config.mode) == ("root", tabby.user, 0o640)
    data = yaml.safe_load(config.content_string)
    assert data["network"]["disable_auth"] is False
    assert data["network"]["host"] == listen and data["network"]["port"] == tabby.port
    assert data["model"]["model_dir"] == tabby.model_dir
    assert data["model"].get("model_name", "") == tabby.model
    assert data["model"]["cache_mode"] == tabby.cache_mode


def test_key_files_are_the_service_users_only(guest, tabby):
    tokens = guest.file(render.TOKENS_FILE)
    assert (tokens.user, tokens.group, tokens.mode) == (tabby.user, tabby.user, 0o600)
    keys = guest.check_output(f"sed -n 's/^\\(api_key\\|admin_key\\): .\\+/\\1/p' {tokens.path}")
    assert keys.split() == ["api_key", "admin_key"]
    log = guest.file(render.LOG_FILE)
    assert (log.user, log.mode) == (tabby.user, 0o600)
    token = guest.file(f"{render.home(tabby)}/.cache/huggingface/token")
    if token.exists:
        assert (token.user, token.mode) == (tabby.user, 0o600)


def test_unit_is_enabled_and_logs_to_the_private_file(guest, tabby):
    assert guest.service(render.UNIT).is_enabled
    unit = guest.file(render.UNIT_PATH).content_string
    assert f"WorkingDirectory={tabby.current}/src" in unit and "Restart=on-failure" in unit
    assert f"StandardOutput=append:{render.LOG_FILE}" in unit


def test_the_service_runs_the_wanted_release_from_a_clean_checkout(running, tabby):
    assert running.file(tabby.current).linked_to == tabby.release_dir
    src = f"{tabby.current}/src"
    head = running.check_output(f"git -C {src} rev-parse HEAD")
    assert head == running.check_output(f"git -C {src} rev-parse '{tabby.git_ref}^{{commit}}'")
    assert running.check_output(f"git -C {src} status --porcelain --untracked-files=no") == ""
    for name, target in (("config.yml", render.CONFIG_FILE), ("logs", render.LOG_DIR)):
        assert running.file(f"{src}/{name}").linked_to == target
    assert running.file(tabby.lock).exists  # its first install that answered is locked


def test_keys_are_not_in_the_journal(guest):
    """tabbyAPI prints both keys at start; the journal (readable by adm/systemd-journal members)
    must not have them."""
    for key in ("api_key", "admin_key"):
        found = guest.run(
            f"k=$(sed -n 's/^{key}: //p' {render.TOKENS_FILE}); "
            '[ -n "$k" ] || { echo none; exit; }; '
            'journalctl --no-pager -q 2>/dev/null | grep -cF -- "$k"'
        )
        count = found.stdout.strip()
        assert count != "none", f"no {key} in {render.TOKENS_FILE}: nothing to look for"
        assert count == "0", f"the journal holds the {key}"


def test_listens_on_the_configured_address_only(running, tabby, listen):
    sockets = running.check_output(f"ss -ltnH 'sport = :{tabby.port}'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in sockets}
    assert addresses == {listen}, sockets


def test_health_needs_no_key(running, tabby, listen):
    status, _ = curl(running, f"http://{client_address(listen)}:{tabby.port}/health")
    assert status == 200


def test_models_answers_with_the_key_and_refuses_without(running, tabby, listen):
    url = f"http://{client_address(listen)}:{tabby.port}/v1/models"
    status, _ = curl(running, url)
    assert status == 401
    status, _ = curl(running, url, "-H", f'"Authorization: Bearer {API_KEY}"')
    assert status == 200  # the body is not shown: keep test output free of the model list too
    status, body = curl(running, url, "-H", f'"x-api-key: {API_KEY}"')
    assert status == 200 and "data" in json.loads(body)
