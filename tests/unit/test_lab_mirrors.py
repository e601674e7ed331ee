"""Where the lab finds tabbyAPI's optional git bundle, and what its guest is told to clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab import mirrors
from lab.config import Lab
from lab.inventory import host_data


@pytest.fixture
def no_github(monkeypatch):
    monkeypatch.setattr(mirrors, "github_answers", lambda: False)


def bundle(tmp_path: Path) -> Path:
    repo = tmp_path / "upstream"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "main.py").write_text("print('hi')\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    path = tmp_path / "tabbyAPI.bundle"
    subprocess.run([*git, "bundle", "create", "-q", str(path), "main"], check=True)
    return path


def test_a_bundle_named_in_the_environment_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(mirrors.BUNDLE_ENV, str(tmp_path / "missing.bundle"))
    with pytest.raises(SystemExit, match=f"{mirrors.BUNDLE_ENV}=.*no such file"):
        mirrors.tabbyapi_bundle()


def test_without_bundle_or_github_the_guest_gets_no_tabbyapi_source(
    monkeypatch, tmp_path, no_github
):
    monkeypatch.delenv(mirrors.BUNDLE_ENV, raising=False)
    monkeypatch.setattr(mirrors, "REPO", tmp_path / "repo")  # nothing beside it
    lab = Lab("t", tmp_path / "lab")
    assert mirrors.tabbyapi_bundle() is None and mirrors.ensure(lab) is None
    assert mirrors.tabbyapi_url(lab) is None


def test_the_usual_place_is_shared_mirrors_beside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv(mirrors.BUNDLE_ENV, raising=False)
    usual = tmp_path / "shared" / "mirrors"
    usual.mkdir(parents=True)
    bundle(tmp_path).rename(usual / "tabbyAPI.bundle")
    monkeypatch.setattr(mirrors, "REPO", tmp_path / "repo")
    assert mirrors.tabbyapi_bundle() == usual / "tabbyAPI.bundle"


def test_a_bundle_is_served_as_a_bare_clone_and_the_guest_runs_tabbyapi_from_it(
    monkeypatch, tmp_path, no_github
):
    monkeypatch.setenv(mirrors.BUNDLE_ENV, str(bundle(tmp_path)))
    lab = Lab("t", tmp_path / "lab")
    bare = mirrors.ensure(lab)
    assert bare == lab.dir / "mirrors" / "tabbyAPI.git" and (bare / "HEAD").exists()
    assert mirrors.tabbyapi_url(lab) == "/srv/aicoder-lab-mirrors/tabbyAPI.git"
    lab.dir.mkdir(parents=True, exist_ok=True)
    lab.key.with_suffix(".pub").write_text("ssh-ed25519 AAAA test\n")
    data = host_data(lab, "guest", "10.0.0.10")
    assert data["tabbyapi_git_url"] == "/srv/aicoder-lab-mirrors/tabbyAPI.git"
    assert data["tabbyapi_pip_extras"] == [] and data["tabbyapi_lab_unsafe_launch"] is True
