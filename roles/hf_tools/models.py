"""Models from Hugging Face for a serving role (tabbyAPI, vLLM): each downloaded with the pinned
`hf` CLI as the service user into its own folder, checked, and stamped with its repo@revision, so
a converged guest downloads nothing and a failed download is retried."""

from __future__ import annotations

import shlex

from pyinfra.operations import server

from roles.common import checks, host_state
from roles.common.host_state import State
from roles.common.services import kept_secret
from roles.hf_tools import hf_command

HF_REPO = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
FOLDER = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}"
hf_repo = checks.matches(HF_REPO, "a Hugging Face repo id like 'owner/name'")
"""Check of a setting naming a Hugging Face repo."""
folder_name = checks.optional(checks.matches(FOLDER, "a folder name (letters, digits, . _ + -)"))
"""Check of a setting naming a model's folder (or its served name); empty: derived."""
MODEL_STAMP = ".aicoder-source"  # in a model folder: repo@revision it was downloaded from


def hf_home(home: str) -> str:
    """HF_HOME of a service user with ``home``: its Hugging Face token and download cache."""
    return f"{home}/.cache/huggingface"


def service_folders(user: str, home: str, model_dir: str) -> list[tuple[str, str, str]]:
    """(path, owner:group, mode) of a model server's home, its caches (0700: the token is
    there) and its model folder."""
    mine = f"{user}:{user}"
    return [
        (home, mine, "750"),
        (f"{home}/.cache", mine, "700"),
        (hf_home(home), mine, "700"),
        (model_dir, mine, "750"),
    ]


def model_folder(repo: str, revision: str) -> str:
    """The folder a Hugging Face repo lands in: its name, plus the revision unless 'main'."""
    name = repo.rsplit("/", 1)[-1]
    return name if revision in ("", "main") else f"{name}-{revision.replace('/', '-')}"


def probe(model_dir: str, folders: list[str]) -> list[str]:
    """Probe lines 'model <folder> <stamp>' for each complete folder (a config.json and at least
    one *.safetensors: a failed download leaves neither)."""
    q = shlex.quote
    lines = []
    for folder in folders:
        path = q(f"{model_dir}/{folder}")
        lines.append(
            f"if [ -f {path}/config.json ] && ls {path}/*.safetensors >/dev/null 2>&1; then "
            f"echo model {q(folder)} $(cat {path}/{MODEL_STAMP} 2>/dev/null); fi"
        )
    return lines


def parse(lines: list[str]) -> dict[str, str]:
    """Complete model folder -> its stamp, from the probe's lines."""
    found = {}
    for line in lines:
        kind, _, value = line.partition(" ")
        if kind == "model" and value.strip():
            folder, _, stamp = value.strip().partition(" ")
            found[folder] = stamp.strip()
    return found


def download(
    user: str,
    hf_home: str,
    model_dir: str,
    downloads: list[tuple[str, str, str]],
    have: dict[str, str],
) -> list:
    """Each of ``downloads`` (repo, revision, folder) not in ``have`` (folder -> stamp)
    downloaded with `hf` as ``user``, then checked: a download that left no config.json or
    *.safetensors fails here instead of at the server's start. Returns the operations."""
    q = shlex.quote
    ops = []
    for repo, revision, folder in downloads:
        source = f"{repo}@{revision}"
        if have.get(folder) == source:
            continue
        path = f"{model_dir}/{folder}"
        as_user = f"runuser -u {q(user)} --"
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
                    f"{as_user} sh -c {q(f'echo {q(source)} > {q(path)}/{MODEL_STAMP}')}",
                ],
            )
        )
    return ops


def token_file(state: State, path: str, user: str, token: str | None) -> None:
    """The user's Hugging Face token (the secret hf_token) in ``path``, 0600 and the service
    user's, for gated repos; removed when no token is given."""
    if token:
        kept_secret(state, "Hugging Face token", path, token + "\n", user)
    else:
        host_state.absent(state, "no Hugging Face token", path)
