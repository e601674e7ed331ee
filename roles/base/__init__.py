"""Base role: what every host gets before the roles that make it a hypervisor or an AI guest."""

from __future__ import annotations

import os

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from roles.base import facts
from roles.base.facts import BROKEN_PACKAGES, STAMP
from roles.base.settings import BaseSettings
from roles.common import host_state, prefetch
from roles.common.host_state import FileState, State
from roles.common.platform import DEBIAN, RELEASES, Release, profile

__all__ = ["BaseSettings", "configure"]


def debian_sources(settings: BaseSettings, release: Release) -> str:
    """deb822 sources for the release, -updates and -security with the configured components."""
    components = " ".join(settings.debian_components)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        "# Managed by the ai-coding-server deploy (roles/base).\n"
        f"Types: deb\nURIs: {settings.debian_mirror}\nSuites: {' '.join(release.suites)}\n"
        f"Components: {components}\nSigned-By: {keyring}\n\n"
        f"Types: deb\nURIs: {settings.debian_security_mirror}\n"
        f"Suites: {release.security_suite}\n"
        f"Components: {components}\nSigned-By: {keyring}\n"
    )


SOURCES = "/etc/apt/sources.list.d/debian.sources"
LOCK_CONF = "/etc/apt/apt.conf.d/90aicoder-lock-timeout"
LEGACY_SOURCES = "/etc/apt/sources.list"
INDEX_MAX_AGE = 86400  # seconds; other roles add their own sources and refresh on change
SHELL = "/bin/bash"


def debian_files(settings: BaseSettings, release: Release) -> dict[str, str]:
    """path -> content of the apt files the role manages on Debian (all root:root 0644)."""
    return {
        SOURCES: debian_sources(settings, release),
        # A deploy re-run right after an interrupted one meets the orphaned apt/dpkg still
        # holding its lock: wait for it rather than fail ("Could not get lock ...").
        LOCK_CONF: 'DPkg::Lock::Timeout "600";\n',
        # A one-line sources.list keeps images that ship entries there from listing them twice.
        LEGACY_SOURCES: "# Moved to /etc/apt/sources.list.d/debian.sources\n",
    }


def _read_spec(settings: BaseSettings) -> dict:
    """What the role reads: the same for every OS family (each family's packages), so the
    deploy's one read per host can ask it before the family is known."""
    user = settings.admin_user
    home = f"/home/{user}"
    release_packages = [p for release in RELEASES.values() for p in release.packages]
    return dict(
        paths=[
            SOURCES,
            LOCK_CONF,
            LEGACY_SOURCES,
            sudoers_path(user),
            "/etc/timezone",
            keys_path(home),
        ],  # fmt: skip
        packages=list(
            dict.fromkeys(settings.packages + release_packages + host_state.plain_for(host))
        ),
        probe=facts.probe(settings.timezone, user, home),
    )


@prefetch.reader("hypervisors", "ai_guests")
def reads(host) -> list[prefetch.Request]:
    """What :func:`configure` reads on ``host``."""
    return [host_state.request(**_read_spec(BaseSettings.from_host(host)))]


@deploy("Base: Debian package sources")
def _debian_package_sources(state: State, probe: dict, release: Release):
    """Ensures the release's suites, -updates and -security with the configured components are
    the only sources in the main list, and refreshes the package index when they changed, when
    it is a day old or was never fetched. ``state`` and ``probe`` are the role's HostState read."""
    settings = BaseSettings.from_host(host)
    changed = [
        host_state.put(state, f"apt: {path}", path, content)
        for path, content in debian_files(settings, release).items()
    ]
    age = probe["index_age"]
    host_state.after(
        changed,
        server.shell,
        force=age is None or age > INDEX_MAX_AGE,
        name="Refresh the package index",
        commands=["apt-get update -qq", f"mkdir -p {os.path.dirname(STAMP)}", f"touch {STAMP}"],
    )
    # Finish a dpkg run that was killed: a deploy interrupted at any point must converge. A
    # package dpkg was unpacking when it died needs reinstalling (after the index refresh above).
    if probe["dpkg_interrupted"]:
        server.shell(
            name="Finish an interrupted dpkg run",
            commands=[
                "export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a || true; "
                f"broken=$({BROKEN_PACKAGES}); "
                '[ -z "$broken" ] || apt-get install -y --reinstall '
                "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $broken; "
                "dpkg --configure -a"
            ],
        )


@deploy("Base: configure the host")
def configure():
    """Ensures package sources (Debian), the base packages, the admin user with its SSH keys and
    sudo rights, and the time zone. Reads the host once; a converged host costs that one read.

    Example, in your own deploy file:

    .. code:: python

        from roles import base

        base.configure()  # settings: base_* in group_data/all.py
    """
    settings = BaseSettings.from_host(host)
    release = profile(host)
    family = release.family
    user = settings.admin_user
    home = f"/home/{user}"
    # With the AI roles' plain packages: one transaction on a fresh host.
    packages = list(
        dict.fromkeys(settings.packages + list(release.packages) + host_state.plain_for(host))
    )
    state = host_state.read(**_read_spec(settings))
    probe = facts.parse(state.probe)
    if probe["timezone_exists"] is False:
        raise DeployError(
            f"{host.name}: base_timezone {settings.timezone!r} is not a time zone on this host "
            "(no file under /usr/share/zoneinfo); use a name like 'Europe/Berlin' or 'UTC'"
        )

    if family == DEBIAN:
        _debian_package_sources(state=state, probe=probe, release=release)
    host_state.packages(state, "Base packages", packages)

    _admin_user(settings, state, probe, home)
    nopasswd = "NOPASSWD: " if settings.admin_passwordless_sudo else ""
    host_state.put(
        state,
        "Sudo rights for the admin user",
        sudoers_path(user),
        f"{user} ALL=(ALL:ALL) {nopasswd}ALL\n",
        mode="440",
    )
    zone_file = f"/usr/share/zoneinfo/{settings.timezone}"
    if probe["localtime"] != zone_file:
        files.link(name=f"Time zone {settings.timezone}", path="/etc/localtime", target=zone_file)
    if family == DEBIAN:
        host_state.put(state, "Time zone name for Debian tools", "/etc/timezone",
                       f"{settings.timezone}\n")  # fmt: skip


def sudoers_path(user: str) -> str:
    return f"/etc/sudoers.d/90-{user}"


def keys_path(home: str) -> str:
    return f"{home}/.ssh/authorized_keys"


def _admin_user(settings: BaseSettings, state: State, probe: dict, home: str) -> None:
    """The admin user with exactly the configured SSH keys, unless the host already has it
    so (pyinfra's server.user reads half a dozen facts to find that out)."""
    user, keys = settings.admin_user, settings.admin_ssh_keys
    in_place = probe["user"] == {"home": home, "shell": SHELL} and probe["home_exists"]
    if keys:  # server.user writes exactly these keys, one a line, 0600 in a 0700 ~/.ssh
        owner = f"{user}:{user}"
        wanted = FileState("600", owner, host_state.sha1("\n".join(keys) + "\n"))
        in_place = in_place and probe["ssh_dir"] == f"700 {owner}"
        in_place = in_place and state.files.get(keys_path(home)) == wanted
    if in_place:
        host.noop(f"admin user {user} is up to date")
        return
    server.user(
        name=f"Admin user {user}",
        user=user,
        home=home,
        shell=SHELL,
        create_home=True,
        public_keys=keys or None,
        delete_keys=True,
    )
