"""Resilience of the whole guest deploy on the shared, converged lab guest (real pyinfra CLI).

1. An interrupted deploy converges on the next run with no manual repair: a piece of managed
   state is undone in the guest, a deploy is started and SIGKILLed while the operation that
   restores it runs (pyinfra logs "--> Starting operation: <names>" before running one; the
   command it sent may keep running in the guest, as it would for a user whose laptop died),
   then the next deploy must succeed and leave the guest as it was, and one more run must
   change nothing.
2. A re-deploy keeps the user's data (downloaded models, Ollama's data, the API keys) and puts
   back a managed file the user edited, saying so in its output.

Runs after the session's fresh deploy and re-run (it depends on `deploys`), so the extra runs
here are re-runs on a converged guest (seconds each), plus the work each kill point redoes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_run import ANSI, DeployRun, pyinfra_command

from roles.docker.facts import DAEMON_JSON
from roles.hf_tools.settings import HfToolsSettings
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi.settings import TabbyapiSettings

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab

RESULT = re.compile(r"^\s*\[\S+\] (Success|No changes|Skipped)", re.M)  # an op's outcome line
HF_VENV = HfToolsSettings.venv  # dataclass defaults: the lab overrides leave these alone
TABBY_CONFIG = "/etc/tabbyapi/config.yml"
TABBY_TOKENS = "/etc/tabbyapi/api_tokens.yml"
TABBY_MODELS = TabbyapiSettings.model_dir
OLLAMA_DATA = OllamaSettings.data_dir
OLLAMA_COMPOSE = f"{OllamaSettings.project_dir}/compose.yaml"
STAMP = "/var/lib/apt/periodic/update-success-stamp"
MANAGED_FILES = [
    "/etc/apt/sources.list.d/debian.sources",
    "/etc/apt/sources.list",
    DAEMON_JSON,
    TABBY_CONFIG,
    TABBY_TOKENS,
    "/etc/systemd/system/tabbyapi.service",
    "/etc/systemd/system/ollama.service",
    OLLAMA_COMPOSE,
]
UNITS = ["docker", "tabbyapi", "ollama"]
LEFT = "apt|dpkg|http|pip|python3|systemctl"  # process names a killed run may leave behind


def guest(lab, command: str, check: bool = True) -> str:
    return lab.ssh("guest", command, check=check).stdout.strip()


def snapshot(lab) -> dict[str, str]:
    """What the deploy manages in the guest, read in one SSH call."""
    files = " ".join(MANAGED_FILES)
    out = guest(
        lab,
        f"""
        echo '## packages'; dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n'
        echo '## dpkg audit'; dpkg --audit
        echo '## files'; sha256sum {files} 2>&1; stat -c '%n %a %U:%G' {files} 2>&1
        echo '## units'; for u in {" ".join(UNITS)}; do
            echo "$u $(systemctl is-enabled $u 2>&1) $(systemctl is-active $u 2>&1)"; done
        echo '## docker'; docker info --format '{{{{.LoggingDriver}}}}' 2>&1
        echo '## hf'; {HF_VENV}/bin/python -c \
            'import huggingface_hub as h; print(h.__version__)' 2>&1; readlink /usr/local/bin/hf
        """,
    )
    return dict(
        (part.split("\n", 1) + [""])[:2] for part in out.split("## ")[1:]
    )  # section -> text


@dataclass
class Run(DeployRun):
    killed_after: str | None = None  # the "Starting operation" line the run was killed at
    finished: bool = False  # whether that operation reported its result before the kill


def pyinfra(lab, kill_at: re.Pattern | None = None, delay: float = 0.0) -> Run:
    """The real CLI as a user runs it; SIGKILLed `delay` seconds after it logs the start of an
    operation whose names match `kill_at`."""
    started = time.monotonic()
    proc = subprocess.Popen(
        pyinfra_command(lab.inventory), cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines, killed_after, finished = [], None, False
    try:
        for line in proc.stdout:
            lines.append(line)
            plain = ANSI.sub("", line)
            if kill_at and "Starting operation:" in plain and kill_at.search(plain):
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                killed_after = plain.strip()
                rest = proc.stdout.read()  # what it printed before the kill
                lines.append(rest)
                finished = bool(RESULT.search(ANSI.sub("", rest)))
                break
        proc.wait(timeout=1800)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return Run(proc.returncode, "".join(lines), time.monotonic() - started, killed_after, finished)


# (id, shell commands that undo managed state, operation to kill in, seconds after its start,
#  whether the commands the killed run left in the guest are SIGKILLed too: a power cut)
KILL_POINTS = [
    pytest.param(
        # no index at all: the refresh downloads all of it (seconds), so the kill lands inside it
        f"rm -rf /etc/apt/sources.list.d/debian.sources {STAMP} /var/lib/apt/lists/*",
        r"Refresh the package index",
        1.0,
        False,
        id="apt-get-update",
    ),
    pytest.param(
        # the .debs stay in apt's cache: the kill lands in dpkg's unpack/configure, not the download
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq git git-man jq tmux",
        r"\bBase packages\b",
        0.7,
        False,
        id="dpkg-install-base-packages",
    ),
    pytest.param(
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq git git-man jq tmux",
        r"\bBase packages\b",
        0.7,
        True,
        id="dpkg-install-base-packages-and-dpkg-itself",
    ),
    pytest.param(
        f"rm -rf {HF_VENV}",
        r"Hugging Face tools \| huggingface_hub",
        1.5,
        False,
        id="pip-install-hf-cli",
    ),
    pytest.param(
        # A user's own change, applied: Docker runs with another log driver until the deploy
        # puts its key back and restarts it.
        # (reset-failed: the restarts here stay under docker.service's StartLimitBurst=3/60 s)
        f'sed -i \'s/"json-file"/"local"/\' {DAEMON_JSON} && systemctl reset-failed docker '
        "&& systemctl restart docker",
        r"Docker \| restart to apply daemon.json",
        0.0,
        False,
        id="docker-restart",
    ),
    pytest.param(
        f"rm -f {TABBY_CONFIG}",
        r"tabbyAPI \| config\.yml",
        0.0,
        False,
        id="write-tabbyapi-config",
    ),
    pytest.param(
        f"rm -f {OLLAMA_COMPOSE}; systemctl disable ollama",
        r"Ollama \| compose\.yaml is valid",
        0.0,
        False,
        id="validate-ollama-compose",
    ),
]


@pytest.fixture(scope="module")
def converged(deploys, lab):
    """The shared guest after the session's deploys, and its managed state."""
    first, _ = deploys
    if not first.ok:
        pytest.skip("the session's first deploy failed (test_lab.py reports it)")
    return lab, snapshot(lab)


@pytest.mark.parametrize(("undo", "target", "delay", "power_cut"), KILL_POINTS)
def test_killed_deploy_converges_on_the_next_run(
    converged, deploys, undo, target, delay, power_cut
):
    lab, before = converged
    guest(lab, undo)
    killed = pyinfra(lab, re.compile(target), delay)
    assert killed.killed_after, f"{target!r} never started:\n{killed.tail()}"
    assert killed.returncode == -signal.SIGKILL, killed.tail()
    assert not killed.finished, f"{target!r} ended before the kill:\n{killed.tail()}"
    # What the kill left running in the guest (the next run has to cope with it).
    cut = f"kill -9 $(pgrep '{LEFT}'); echo power cut; dpkg --audit | head -2;" if power_cut else ""
    left = guest(lab, f"pgrep -a '{LEFT}'; {cut} true")  # the kill by the PIDs the run left

    rerun = pyinfra(lab)
    assert rerun.returncode == 0, f"the run after the kill failed:\n{rerun.tail()}"
    print(f"killed {killed.seconds:.1f} s in, at {killed.killed_after!r}; left running: "
          f"{left or 'nothing'}; the next run ({rerun.seconds:.1f} s) changed "
          f"{rerun.changed_operations()}")  # fmt: skip
    after = snapshot(lab)
    diff = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not diff, f"not converged after {killed.killed_after!r} (before, after): {diff}"

    last = pyinfra(lab)
    assert last.returncode == 0, last.tail()
    changed = last.changed_operations()
    assert not changed, f"the run after that changed {changed}:\n{last.tail()}"


def test_a_package_dpkg_left_half_installed_is_reinstalled(converged, deploys):
    """What a power cut while dpkg unpacks a package leaves (seen in a CI run of the kill point
    above: git 'iHR' with its md5sums gone, nothing in dpkg's journal), made on purpose so that
    every run tests it, not only those whose kill lands inside an unpack."""
    lab, before = converged
    audit = guest(
        lab,
        "sed -i '/^Package: git$/,/^$/ s/^Status: .*/Status: install reinstreq half-installed/' "
        "/var/lib/dpkg/status && rm -f /var/lib/dpkg/info/git.md5sums && dpkg --audit",
        check=False,
    )
    assert "git" in audit, audit

    rerun = pyinfra(lab)
    assert rerun.returncode == 0, rerun.tail()
    changed = rerun.changed_operations()
    assert any("Finish an interrupted dpkg run" in n for n in changed), changed
    after = snapshot(lab)
    diff = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not diff, f"not converged (before, after): {diff}"
    last = pyinfra(lab)
    assert last.returncode == 0 and not last.changed_operations(), last.tail()


def test_redeploy_keeps_data_and_restores_an_edited_file(converged, deploys):
    lab, before = converged
    model = f"{TABBY_MODELS}/user-model-exl3"
    guest(
        lab,
        f"""
        mkdir -p {model} {OLLAMA_DATA}/models/blobs
        head -c 1048576 /dev/urandom > {model}/model.safetensors
        echo '{{"model_type": "qwen3"}}' > {model}/config.json
        head -c 65536 /dev/urandom > {OLLAMA_DATA}/models/blobs/sha256-user
        echo '# my own tweak' >> {TABBY_CONFIG}
        """,
    )
    data = f"find {TABBY_MODELS} {OLLAMA_DATA} {TABBY_TOKENS} -type f -print0 | sort -z | xargs -0 sha256sum"  # noqa: E501
    kept = guest(lab, data)
    assert "model.safetensors" in kept and "sha256-user" in kept and TABBY_TOKENS in kept

    run = pyinfra(lab)
    assert run.returncode == 0, run.tail()
    assert guest(lab, data) == kept, "the re-deploy changed the models, Ollama's data or the keys"
    assert snapshot(lab)["files"] == before["files"], "config.yml was not restored"
    changed = run.changed_operations()
    assert "tabbyAPI | config.yml" in changed, changed
    # Only the edited file (and what it triggers, e.g. a restart) changed.
    assert all(re.search(r"tabbyAPI", n) for n in changed), changed
    guest(lab, f"rm -rf {model} {OLLAMA_DATA}/models/blobs/sha256-user")
