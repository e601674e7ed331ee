"""roles/common/host_state.py and apt_repo.py: the one-round-trip state read and its parser."""

from __future__ import annotations

import shutil
import subprocess

from roles.common import host_state
from roles.common.apt_repo import AptRepo
from roles.common.host_state import FileState, HostState


def test_parse_files_packages_units_and_probe_lines():
    state = host_state.parse(
        [
            "file 644 root:root 9a97fd67c18ad52acc99246cb1665eded10c7a3b /etc/with space.conf",
            "package ii  docker.io 20.10.24+dfsg1-1+deb12u1+b6",
            "package un  docker-ce ",
            "package rc  podman-docker 4.3.1",
            "package hi  nvidia-driver 535.309.01-0+deb12u1",
            "unit docker enabled=enabled active=active",
            "unit nvidia-persistenced enabled= active=inactive",
            "probe running 6.1.0-28-amd64",
        ]
    )
    assert state.files == {
        "/etc/with space.conf": FileState(
            "644", "root:root", "9a97fd67c18ad52acc99246cb1665eded10c7a3b"
        )
    }
    assert state.packages == {
        "docker.io": "20.10.24+dfsg1-1+deb12u1+b6",
        "nvidia-driver": "535.309.01-0+deb12u1",  # held counts as installed
    }
    assert state.units == {"docker": ("enabled", "active"), "nvidia-persistenced": ("", "inactive")}
    assert state.probe == ["running 6.1.0-28-amd64"]


def test_missing_honours_pinned_versions():
    state = host_state.parse(["package ii  docker-ce 5:27.5.1-1~debian.12~bookworm"])
    assert host_state.missing(state, ["docker-ce"]) == []
    assert host_state.missing(state, ["docker-ce=5:27.5.1-1~debian.12~bookworm"]) == []
    assert host_state.missing(state, ["docker-ce=5:28.0.0-1~debian.12~bookworm", "jq"]) == [
        "docker-ce=5:28.0.0-1~debian.12~bookworm",
        "jq",
    ]


def test_the_command_runs_and_reads_back_what_it_finds(tmp_path):
    """The real shell command, run here on files this test makes."""
    managed = tmp_path / "a file.conf"
    managed.write_text("blacklist nouveau\n")
    managed.chmod(0o640)
    command = HostState().command(
        paths=(str(managed), str(tmp_path / "absent")),
        packages=("dpkg", "surely-not-a-package"),
        probe="echo one; echo two",
    )
    out = subprocess.run(
        ["sh", "-c", command.get_raw_value()], capture_output=True, text=True, check=True
    )
    state = host_state.parse(out.stdout.splitlines())
    found = state.files[str(managed)]
    assert found.mode == "640"
    assert found.sha1 == host_state.sha1("blacklist nouveau\n")
    assert str(tmp_path / "absent") not in state.files
    assert "dpkg" in state.packages and "surely-not-a-package" not in state.packages
    assert state.probe == ["one", "two"]


def test_on_el9_a_package_counts_as_installed_when_an_installed_one_provides_it(tmp_path):
    """The rpm branch (no dpkg-query on PATH), with a stand-in rpm that answers --whatprovides
    the way rpm does on Rocky 9 (curl-minimal provides curl; nothing provides nano)."""
    (tmp_path / "rpm").write_text(
        "#!/bin/sh\nfor a; do qf=$last; last=$a; done\n"
        '[ "$last" = curl ] || { echo "no package provides $last"; exit 1; }\n'
        'printf "$(printf %s "$qf" | sed \'s/%{VERSION}/7.76.1/; s/%{RELEASE}/19.el9/\')"\n'
    )
    (tmp_path / "rpm").chmod(0o755)
    for tool in ("grep", "sed"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    command = HostState().command(packages=("curl", "nano")).get_raw_value()
    assert "rpm -q --whatprovides" in command
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": str(tmp_path)}, check=True)  # fmt: skip
    assert host_state.parse(out.stdout.splitlines()).packages == {"curl": "7.76.1-19.el9"}


def test_flat_and_suite_repositories_render_as_deb822():
    flat = AptRepo("x", "X", "https://repo.example/deb/$(ARCH)", ("/",), (), "https://k/gpg")
    assert "Components" not in flat.source_text()
    suite = AptRepo("y", "Y", "https://repo.example", ("bookworm",), ("stable",), "https://k")
    assert "Suites: bookworm\nComponents: stable\nSigned-By: /etc/apt/keyrings/y.asc\n" in (
        suite.source_text()
    )
