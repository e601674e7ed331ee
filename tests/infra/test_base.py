"""Checks of the base role on every host: package sources, base packages, admin user, time."""

from __future__ import annotations

import re
import shlex

import pytest
from role_settings import release_of, settings_of

from roles.base.settings import BaseSettings


@pytest.fixture
def base(host_data: dict) -> BaseSettings:
    """The base role's settings for this host, as the deploy computed them."""
    return settings_of(BaseSettings, host_data)


@pytest.fixture
def debian(any_host):
    if any_host.system_info.distribution != "debian":
        pytest.skip(f"not Debian: {any_host.system_info.distribution}")
    return any_host


def apt_sources(host) -> set[tuple[str, str, str]]:
    """(uri, suite, component) of every enabled `deb` source, one-line and deb822 formats."""
    found = set()
    listing = host.check_output(
        "for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list "
        '/etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && echo "## $f" && cat "$f"; done'
    )
    for part in re.split(r"^## ", listing, flags=re.M)[1:]:
        name, _, text = part.partition("\n")
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, flags=re.M))
                if "deb" not in fields.get("Types", "").split():
                    continue
                if fields.get("Enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("URIs", "").split():
                    for suite in fields.get("Suites", "").split():
                        for comp in fields.get("Components", "").split():
                            found.add((uri.rstrip("/"), suite, comp))
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(line) >= 4 and line[0] == "deb":
                    found.update((line[1].rstrip("/"), line[2], c) for c in line[3:])
    return found


def test_debian_sources(debian, base):
    """The release's suite, -updates and -security with every configured component."""
    found = apt_sources(debian)
    release = release_of(debian)
    mirrors = {suite: base.debian_mirror for suite in release.suites}
    mirrors[release.security_suite] = base.debian_security_mirror
    missing = {
        (mirror.rstrip("/"), suite, comp)
        for suite, mirror in mirrors.items()
        for comp in base.debian_components
    } - found
    assert not missing, f"apt sources lack {sorted(missing)}; found {sorted(found)}"


def test_base_packages(any_host, base):
    missing = [p for p in base.packages if not any_host.package(p.split("=")[0]).is_installed]
    assert not missing, f"base packages not installed: {missing}"


def test_admin_user_has_sudo(any_host, base):
    user = any_host.user(base.admin_user)
    assert user.exists, f"admin user {base.admin_user!r} missing"
    assert any_host.file(user.home).is_directory
    rights = any_host.check_output(f"sudo -n -l -U {shlex.quote(base.admin_user)}")
    wanted = "NOPASSWD: ALL" if base.admin_passwordless_sudo else "ALL"
    assert re.search(r"\(ALL(\s*:\s*ALL)?\)\s+" + re.escape(wanted) + r"\s*$", rights, re.M), rights
    assert any_host.run("visudo -c").rc == 0, "sudoers files do not parse"


def test_admin_user_authorized_keys(any_host, base):
    if not base.admin_ssh_keys:
        pytest.skip("base_admin_ssh_keys is empty: no key to check")
    home = any_host.user(base.admin_user).home
    keys = any_host.file(f"{home}/.ssh/authorized_keys")
    assert keys.exists
    assert keys.user == base.admin_user
    assert keys.mode & 0o022 == 0, "sshd refuses an authorized_keys others can write"
    lines = {" ".join(line.split()[:2]) for line in keys.content_string.splitlines()}
    missing = [k for k in base.admin_ssh_keys if " ".join(k.split()[:2]) not in lines]
    assert not missing, f"keys missing from {keys.path}: {missing}"


def test_timezone(any_host, base):
    zone = f"/usr/share/zoneinfo/{base.timezone}"
    assert any_host.file(zone).exists, f"{zone} missing (is tzdata installed?)"
    actual = any_host.check_output("readlink -f /etc/localtime")
    assert actual == any_host.check_output(f"readlink -f {shlex.quote(zone)}")
    if any_host.system_info.distribution == "debian":
        assert any_host.file("/etc/timezone").content_string.strip() == base.timezone
