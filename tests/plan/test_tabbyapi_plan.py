"""Plan tests of the hf_tools and tabbyapi roles: the real deploy.py on a fake Debian 12 guest.

Recorded: os-release (tests/fixtures/el9/os-release.debian-12.txt) and the tabbyapi probe's
output (tests/plan/fixtures/README-guest-services.md). The other answers describe a guest in a
given state in the format the commands print (see guest_services_facts.py).
"""

from __future__ import annotations

import logging
import re

import pytest
from guest_services_facts import (
    HF_STATE,
    LAN,
    LISTEN,
    TABBY_STATE,
    address_lines,
    guest_plan,
    own,
    probe_lines,
    responses,
    unit_line,
    use_secrets,
)
from harness import file_line, fixture, package_lines, run_plan
from pyinfra.api import config as pyinfra_config

from roles.tabbyapi import PACKAGES, render
from roles.tabbyapi.settings import TabbyapiSettings

API_KEY, ADMIN_KEY, HF_TOKEN = "api-7f3c9e1d5b2a", "admin-0e8d4c2b6a19", "hf_secretToken123"
OWN_OPS = re.compile(r"^(tabbyAPI|Hugging Face tools)")
REF = TabbyapiSettings().git_ref
MODEL = "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-4.0bpw_H6"
HEALTH = re.compile(r"until curl -fsS -o /dev/null -m 5 \S*http://127\.0\.0\.1:5000/health")
SOURCE = "ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3@4.0bpw_H6"
RELEASE = f"/opt/tabbyapi/releases/{REF}+cu12"
RELEASE_RE = re.escape(RELEASE)
NEW_REF = "0123456789abcdef0123456789abcdef01234567"
NEW_RELEASE = f"/opt/tabbyapi/releases/{NEW_REF}+cu12"
NEW_RELEASE_RE = re.escape(NEW_RELEASE)


@pytest.fixture(autouse=True)
def user_secrets(monkeypatch, tmp_path):
    use_secrets(monkeypatch, tmp_path, API_KEY, ADMIN_KEY)


def install_lines(**changes) -> list[str]:
    """The install part of the tabbyapi probe on a guest where the role has run, as recorded
    (fixtures/tabbyapi-probe.converged.txt), with ``changes`` (None drops a line)."""
    lines = fixture("tabbyapi-probe.converged.txt").splitlines()
    recorded = dict(line.split(" ", 1) for line in lines)
    recorded["gpus"] = "1"  # recorded without a GPU
    recorded.update(changes)
    return [f"{k} {v}".rstrip() for k, v in recorded.items() if v is not None]


def converged_guest(data: dict | None = None, links: bool = True, **install) -> dict:
    """HostState answers of a guest where hf_tools and tabbyapi have run with ``data``."""
    settings, problems = TabbyapiSettings.problems_in(data or {})
    assert not problems, problems
    user = settings.user
    mine = f"{user}:{user}"
    folders = [
        (render.home(settings), mine, "750"),
        (f"{render.home(settings)}/.cache", mine, "700"),
        (f"{render.home(settings)}/.cache/huggingface", mine, "700"),
        (settings.model_dir, mine, "750"),
        (render.LOG_DIR, mine, "700"),
        (render.CONFIG_DIR, f"root:{user}", "750"),
    ]
    # The recording predates releases: the service runs the wanted one, whose lock exists.
    probe = [
        *install_lines(**{"current": settings.release_dir, "locked": "yes", **install}),
        *address_lines(),
    ]
    if links:  # the wanted release's checkout links
        probe += [
            f"link {settings.src}/config.yml {render.CONFIG_FILE}",
            f"link {settings.src}/api_tokens.yml {render.TOKENS_FILE}",
            f"link {settings.src}/logs {render.LOG_DIR}",
        ]
    tabby = [
        file_line(render.CONFIG_FILE, render.config_yml(settings, LISTEN), "640", f"root:{user}"),
        file_line(render.TOKENS_FILE, render.api_tokens_yml(API_KEY, ADMIN_KEY), "600", mine),
        file_line(render.UNIT_PATH, render.unit(settings)),
        file_line(render.LOGROTATE_PATH, render.logrotate(settings)),
        file_line(render.LOG_FILE, "", "600", mine),
        *package_lines(PACKAGES),
        unit_line(render.UNIT),
        *(f"dir {mode} {owner} {path}" for path, owner, mode in folders),
        *probe_lines(probe),
    ]
    hf = [
        *package_lines(["git", "python3-venv"]),
        *probe_lines(["version 2.4.0", "link /opt/hf-cli/bin/hf"]),
    ]
    # Read by the restart operation when it runs (pyinfra's SystemdStatus fact).
    running = {"--property SubState tabbyapi.service": "Id=tabbyapi.service\nSubState=running"}
    return {TABBY_STATE: tabby, HF_STATE: hf, HEALTH: "up", **running}


# --- a fresh guest -------------------------------------------------------------------------------


def test_fresh_guest_gets_user_checkout_venv_model_config_and_a_running_service():
    plan = guest_plan()
    assert plan.find(r"^useradd --system --user-group --home-dir /var/lib/tabbyapi .*tabbyapi$")
    assert plan.find(
        rf"^test -d {RELEASE_RE}/src/.git \|\| {{ mkdir -p {RELEASE_RE} && git clone --quiet "
        rf"--no-checkout https://github.com/theroyallab/tabbyAPI {RELEASE_RE}/src; }}$"
    )
    assert plan.find(r"checkout --quiet --force --detach \"\$commit\"$")
    assert plan.find(rf"rev-parse -q --verify '{REF}\^{{commit}}'")
    assert plan.find(rf"\|\| /usr/bin/python3 -m venv {RELEASE_RE}/venv$")
    # Installed from an export of the checkout, so pip's build/ and egg-info stay out of it.
    assert plan.find(
        rf"git -C {RELEASE_RE}/src archive HEAD \| tar -x -C \"\$tmp\" && "
        rf"{RELEASE_RE}/venv/bin/pip "
        r"install .* \"\$@\" \"\$tmp\"'\[cu12\]'; rc=\$\?; rm -rf \"\$tmp\"; exit \$rc$"
    )
    assert plan.find(rf"^echo '{REF} cu12' > {RELEASE_RE}/venv/.aicoder-installed$")
    # The first release is linked without a trial (nothing runs yet) and locked once it answers.
    assert plan.find(
        rf"^ln -sfn {RELEASE_RE} /opt/tabbyapi/current.new && mv -T /opt/tabbyapi/current.new "
        r"/opt/tabbyapi/current$"
    )
    assert not plan.find(r"setpriv")
    assert plan.find(rf"pip freeze .*--exclude tabbyAPI > /opt/tabbyapi/locks/{REF}\+cu12.txt.tmp")
    assert plan.find(r"^/opt/hf-cli/bin/pip install .*huggingface_hub==2\.4\.0$")
    assert plan.find(r"^ln -s /opt/hf-cli/bin/hf /usr/local/bin/hf$")
    assert plan.find(r"^systemctl start tabbyapi.service$")
    assert plan.find(r"^systemctl enable tabbyapi.service$")
    assert plan.find(rf"^ln -s /etc/tabbyapi/api_tokens.yml {RELEASE_RE}/src/api_tokens.yml$")
    assert plan.find(rf"^ln -s /var/log/tabbyapi {RELEASE_RE}/src/logs$")


def test_keys_and_the_checkout_links_are_in_place_before_anything_can_start_tabbyapi():
    """tabbyAPI writes api_tokens.yml (with new keys) and logs/ into its working directory
    when they are missing: both are there before the first trial or start."""
    names = [n for n, _ in guest_plan().changed if OWN_OPS.match(n)]
    first_start = names.index("tabbyAPI | run release " + f"{REF}+cu12")
    for before in ("api_tokens.yml (keys from the secrets)", "api_tokens.yml in the checkout",
                   "logs in the checkout", "config.yml in the checkout"):  # fmt: skip
        assert names.index(f"tabbyAPI | {before}") < first_start, before


def test_model_is_downloaded_as_the_service_user_then_checked_then_stamped():
    commands = guest_plan().commands
    download = next(i for i, c in enumerate(commands) if " download " in c)
    assert commands[download].startswith("runuser -u tabbyapi -- env ")
    assert (
        f"download ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3 --revision 4.0bpw_H6 "
        f"--local-dir /var/lib/tabbyapi/models/{MODEL}" in commands[download]
    )
    # `hf download` (like tabbyAPI's own download command) is not trusted to fail: the files are.
    check = commands[download + 1]
    assert check.startswith(f"test -f /var/lib/tabbyapi/models/{MODEL}/config.json && ls ")
    assert "*.safetensors" in check and "exit 1" in check
    assert ".aicoder-source" in commands[download + 2] and SOURCE in commands[download + 2]


def test_config_and_keys_files_and_the_unit():
    plan = guest_plan()
    config = plan.files[render.CONFIG_FILE]
    assert "host: 0.0.0.0" in config and "disable_auth: false" in config
    assert f"model_name: {MODEL}" in config
    tokens = plan.files[render.TOKENS_FILE]
    assert tokens == f"api_key: {API_KEY}\nadmin_key: {ADMIN_KEY}\n"
    # Created empty with its final owner and mode before the keys are written into it.
    commands = plan.commands
    created = commands.index(
        "install -m 600 -o tabbyapi -g tabbyapi /dev/null /etc/tabbyapi/api_tokens.yml"
    )
    assert commands[created + 1] == f"upload {render.TOKENS_FILE}"
    assert "WorkingDirectory=/opt/tabbyapi/current/src" in plan.files[render.UNIT_PATH]
    assert plan.find(r"^chmod 600 /var/log/tabbyapi/tabbyapi.log$")


def test_keys_never_reach_commands_or_output_even_with_diff(monkeypatch, caplog):
    monkeypatch.setenv("AICODER_HF_TOKEN", HF_TOKEN)
    monkeypatch.setitem(pyinfra_config.config_defaults, "DIFF", True)
    caplog.set_level(logging.DEBUG)
    plan = guest_plan({"tabbyapi_hf_token_required": True})
    assert "Will create" in caplog.text  # --diff output was on (config.yml is shown)
    for secret in (API_KEY, ADMIN_KEY, HF_TOKEN):
        assert secret not in caplog.text
        assert not [c for c in plan.commands if secret in c]
    assert plan.files["/var/lib/tabbyapi/.cache/huggingface/token"] == HF_TOKEN + "\n"


# --- sources and upstream-dependent steps --------------------------------------------------------


def test_a_local_mirror_and_a_tag():
    plan = guest_plan({"tabbyapi_git_url": "/srv/mirror/tabbyAPI.git", "tabbyapi_git_ref": "v1"})
    assert plan.find(
        r"git clone --quiet --no-checkout /srv/mirror/tabbyAPI.git "
        r"/opt/tabbyapi/releases/v1\+cu12/src"
    )
    assert plan.find(r"rev-parse -q --verify 'origin/v1\^{commit}'")


def test_without_a_source_nothing_is_fetched_and_the_service_is_only_enabled():
    plan = guest_plan({"tabbyapi_git_url": None, "tabbyapi_model_repo": None})
    assert not plan.find(r"git clone|pip install .*tabbyapi|hf download| download ")
    assert not plan.find(r"^systemctl start tabbyapi")
    assert plan.find(r"^systemctl enable tabbyapi.service$")
    assert render.TOKENS_FILE in plan.files and render.CONFIG_FILE in plan.files
    assert "model_name" not in plan.files[render.CONFIG_FILE]


def test_cu13_on_debian_12s_python_is_refused_before_any_change():
    plan = run_plan(
        {"ai_guests": {**LAN, "tabbyapi_pip_extras": ["cu13"]}},
        responses({TABBY_STATE: probe_lines(install_lines(head="", ref="", installed=""))}),
    )
    assert plan.error is not None and not plan.changed
    assert "Python 3.11" in str(plan.error) and "cu13" in str(plan.error)


def test_a_split_over_more_gpus_than_the_guest_has_is_refused():
    plan = run_plan(
        {"ai_guests": {**LAN, "tabbyapi_gpu_split_auto": False, "tabbyapi_gpu_split": [20, 20]}},
        responses(converged_guest()),
    )
    assert plan.error is not None and not plan.changed
    assert "names 2 GPUs but the guest has 1" in str(plan.error)


# --- a converged guest -----------------------------------------------------------------------


def test_converged_guest_plans_nothing():
    plan = guest_plan(extra=converged_guest())
    assert own(plan, OWN_OPS) == [], plan.changed


def test_changed_config_restarts_without_reinstalling():
    plan = guest_plan({"tabbyapi_max_seq_len": 16384}, converged_guest())
    assert own(plan, OWN_OPS) == [
        "tabbyAPI | config.yml",
        "tabbyAPI | restart for the change",
    ], plan.changed
    assert plan.find(r"^systemctl restart tabbyapi.service$")


def test_new_keys_are_written_without_a_restart():
    """tabbyAPI re-reads api_tokens.yml by itself (upstream common/auth.py polls its mtime)."""
    extra = converged_guest()
    old = file_line(render.TOKENS_FILE, "api_key: old\n", "600", "tabbyapi:tabbyapi")
    extra[TABBY_STATE] = [
        old if x.startswith("file ") and x.endswith(render.TOKENS_FILE) else x
        for x in extra[TABBY_STATE]
    ]
    plan = guest_plan(extra=extra)
    assert own(plan, OWN_OPS) == ["tabbyAPI | api_tokens.yml (keys from the secrets)"]


def new_ref_plan(**install):
    """A converged guest (running the default release) asked for NEW_REF; that release's
    folder is as ``install`` says (absent by default)."""
    new = {"head": "", "ref": "", "installed": "", "locked": "no", "current": RELEASE, **install}
    data = {"tabbyapi_git_ref": NEW_REF}
    return guest_plan(data, converged_guest(data, links=bool(new["head"]), **new))


def test_new_ref_is_built_beside_the_running_release_tried_then_switched_to():
    plan = new_ref_plan()
    names = own(plan, OWN_OPS)
    release = f"{NEW_REF}+cu12"
    assert names == [
        f"tabbyAPI | checkout of {NEW_REF}",
        "tabbyAPI | config.yml in the checkout",
        "tabbyAPI | api_tokens.yml in the checkout",
        "tabbyAPI | logs in the checkout",
        "tabbyAPI | Python dependencies (cu12)",
        f"tabbyAPI | run release {release}",
        "tabbyAPI | restart for the change",
        f"tabbyAPI | lock of release {release} (pip freeze)",
    ], names
    # The running release's folder is left alone: the new one gets its own clone and venv.
    assert plan.find(rf"git clone --quiet --no-checkout \S+ {NEW_RELEASE_RE}/src; }}$")
    assert not plan.find(rf"git -C {RELEASE_RE}/src |rm -rf -- {RELEASE_RE}")
    [switch] = [c for n, c in plan.changed if n.endswith(f"run release {release}")]
    trial, link, prune = switch
    # The trial: the new release as the service user, on a free loopback port, no model.
    assert trial.startswith(f"cd {NEW_RELEASE}/src && umask 077 && port=$(")
    assert "setpriv --reuid=tabbyapi --regid=tabbyapi --init-groups" in trial
    assert "TABBY_NETWORK_HOST=127.0.0.1" in trial and "TABBY_MODEL_MODEL_NAME= " in trial
    assert f"{NEW_RELEASE}/venv/bin/python main.py > /var/log/tabbyapi/trial.log" in trial
    assert 'curl -fsS -o /dev/null -m 5 "http://127.0.0.1:$port/health"' in trial
    assert "did not answer /health on trial; the running release keeps serving" in trial
    assert "s/(key is:).*/\\1 <redacted>/I" in trial and "exit 1" in trial
    # ...and only then the switch, keeping the release it replaces (to go back by hand).
    assert link == (
        f"ln -sfn {NEW_RELEASE} /opt/tabbyapi/current.new && "
        "mv -T /opt/tabbyapi/current.new /opt/tabbyapi/current"
    )
    assert f'case "$d" in {NEW_RELEASE}|{RELEASE}) ;;' in prune


def test_a_failed_trial_stops_the_run_before_the_switch():
    """pyinfra stops a host's run at its first failing command: the trial comes first in the
    switch, so `current` and the running service are untouched when it fails."""
    plan = new_ref_plan()
    commands = plan.commands
    trial = next(i for i, c in enumerate(commands) if "on trial" in c)
    assert commands[trial + 1].startswith(f"ln -sfn {NEW_RELEASE} /opt/tabbyapi/current.new")
    assert not [c for c in commands[:trial] if "systemctl restart tabbyapi" in c]


def test_back_to_a_release_that_is_still_there_reuses_it_and_its_lock():
    """Back to the previous ref: its folder is complete, so nothing is cloned or installed;
    it is tried and switched to, and its lock is kept."""
    plan = new_ref_plan(head=NEW_REF, ref=NEW_REF, installed=f"{NEW_REF} cu12", locked="yes")
    names = own(plan, OWN_OPS)
    assert names == [
        f"tabbyAPI | run release {NEW_REF}+cu12",
        "tabbyAPI | restart for the change",
    ], names


def test_a_reinstall_is_held_to_the_lock_of_the_first_good_install():
    plan = new_ref_plan(head=NEW_REF, ref=NEW_REF, installed="", locked="yes")
    lock = re.escape(f"/opt/tabbyapi/locks/{NEW_REF}+cu12.txt")
    assert plan.find(rf"set --; \[ -f {lock} \] && set -- -c {lock}; ")
    assert not plan.find(r"pip freeze")


def test_a_converged_guest_on_the_old_layout_gets_a_release_and_keeps_its_old_folders():
    plan = guest_plan(extra=converged_guest(current="", locked="no"))
    assert plan.find(rf"^ln -sfn {RELEASE_RE} /opt/tabbyapi/current.new")
    assert not plan.find(r"rm -rf -- |setpriv")


def test_an_incomplete_model_folder_is_downloaded_again():
    plan = guest_plan(extra=converged_guest(model=None))
    assert plan.find(rf"download ArtusDev/\S+ --revision 4.0bpw_H6 --local-dir \S+/{MODEL}")


def test_a_service_that_never_answers_fails_with_its_redacted_log_lines():
    """Waited on after a (re)start: here, for a config change."""
    extra = converged_guest()
    extra[HEALTH] = "down"
    plan = guest_plan({"tabbyapi_max_seq_len": 16384}, extra)
    [command] = [c for n, [c, *_] in plan.changed if n == "tabbyAPI | answers /health"]
    assert "did not answer http://127.0.0.1:5000/health within 900 s" in command
    assert "tail -n 30 /var/log/tabbyapi/tabbyapi.log" in command
    assert "journalctl -u tabbyapi.service -n 30" in command
    assert "s/(key is:).*/\\1 <redacted>/I" in command
    assert command.endswith("exit 1")


def test_a_guest_deployed_without_a_source_gets_the_code_once_one_is_set():
    """Recorded on a lab guest after a deploy without a source: user and folders are there."""
    recorded = fixture("tabbyapi-probe.debian-12-lab-deployed.txt").splitlines()
    # Its "dir" lines are what HostState's folder read prints now (the same stat output); the
    # rest is the role's probe.
    dirs = [line for line in recorded if line.startswith("dir ")]
    probe = probe_lines(line for line in recorded if not line.startswith("dir "))
    plan = guest_plan({"tabbyapi_host": "10.213.164.10"}, {TABBY_STATE: [*dirs, *probe]})
    names = own(plan, OWN_OPS)
    assert "tabbyAPI | checkout of " + REF in names
    assert not [n for n in names if "system user" in n or n.endswith("/var/lib/tabbyapi")]
    assert plan.find(r"git clone --quiet --no-checkout https://github.com/theroyallab/tabbyAPI")


def test_with_sudo_the_upload_goes_through_a_private_temporary_file():
    plan = run_plan({"ai_guests": LAN}, responses(), host_data={"_sudo": True})
    assert plan.error is None, plan.error
    commands = plan.commands
    upload = commands.index(f"upload {render.TOKENS_FILE}")
    assert re.fullmatch(r"umask 077 && set -C && : > /tmp/pyinfra-\w+", commands[upload - 1])


def test_a_new_dhcp_lease_changes_nothing():
    """tabbyAPI bound the address read at deploy time: a new lease left it listening on an
    address the guest no longer had. 'auto' now binds every address behind the firewall."""
    answers = converged_guest()
    moved = {"probe route 192.168.1.20": "probe route 192.168.1.77"}
    moved["probe addr 192.168.1.20/24"] = "probe addr 192.168.1.77/24 dynamic"
    answers[TABBY_STATE] = [moved.get(line, line) for line in answers[TABBY_STATE]]
    plan = guest_plan(extra=answers)
    assert own(plan, OWN_OPS) == [], plan.changed
