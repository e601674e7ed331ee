"""Base role: what every host gets before the roles that make it a hypervisor or an AI guest."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, dnf, files, server

from roles.base.facts import STAMP, BaseState
from roles.base.settings import BaseSettings
from roles.common.platform import DEBIAN, os_family

__all__ = ["BaseSettings", "configure"]

# Per family: gnupg for repository keys, tzdata for the time zone link.
_FAMILY_PACKAGES = {DEBIAN: ["gnupg", "apt-transport-https", "tzdata"], "el9": ["gnupg2", "tzdata"]}


def debian_sources(settings: BaseSettings) -> str:
    """deb822 sources for bookworm, -updates and -security with the configured components."""
    components = " ".join(settings.debian_components)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        "# Managed by the ai-coding-server deploy (roles/base).\n"
        f"Types: deb\nURIs: {settings.debian_mirror}\nSuites: bookworm bookworm-updates\n"
        f"Components: {components}\nSigned-By: {keyring}\n\n"
        f"Types: deb\nURIs: {settings.debian_security_mirror}\nSuites: bookworm-security\n"
        f"Components: {components}\nSigned-By: {keyring}\n"
    )


@deploy("Base: Debian package sources")
def debian_package_sources(state: dict):
    """Ensures bookworm, -updates and -security with the configured components are the only
    sources in the main list, and refreshes the package index when they changed. ``state`` is
    the host's BaseState fact."""
    settings = BaseSettings.from_host(host)
    sources = files.put(
        name="Debian sources (deb822)",
        src=StringIO(debian_sources(settings)),
        dest="/etc/apt/sources.list.d/debian.sources",
        mode="644",
    )
    # A deploy re-run right after an interrupted one meets the orphaned apt/dpkg still holding
    # its lock: wait for it rather than fail ("Could not get lock /var/lib/dpkg/lock-frontend").
    files.put(
        name="apt waits for the dpkg lock",
        src=StringIO('DPkg::Lock::Timeout "600";\n'),
        dest="/etc/apt/apt.conf.d/90aicoder-lock-timeout",
        mode="644",
    )
    # A one-line sources.list keeps images that ship entries there from listing them twice.
    legacy = files.put(
        name="Empty the legacy sources.list",
        src=StringIO("# Moved to /etc/apt/sources.list.d/debian.sources\n"),
        dest="/etc/apt/sources.list",
        mode="644",
    )
    # Also refresh when the index is a day old or was never fetched, and finish a dpkg run that
    # was killed: a deploy interrupted at any point must converge on the next run.
    if state["dpkg_interrupted"]:
        server.shell(
            name="Finish an interrupted dpkg run",
            commands=["DEBIAN_FRONTEND=noninteractive dpkg --configure -a"],
        )
    age = state["index_age"]
    stale = age is None or age > INDEX_MAX_AGE
    server.shell(
        name="Refresh the package index",
        commands=["apt-get update -qq", f"mkdir -p {STAMP.rsplit('/', 1)[0]}", f"touch {STAMP}"],
        _if=[lambda: stale or sources.did_change() or legacy.did_change()],
    )


INDEX_MAX_AGE = 86400  # seconds; other roles add their own sources and refresh on change


@deploy("Base: configure the host")
def configure():
    """Ensures package sources (Debian), the base packages, the admin user with its SSH keys and
    sudo rights, and the time zone."""
    settings = BaseSettings.from_host(host)
    family = os_family(host)
    state = host.get_fact(BaseState, timezone=settings.timezone)
    if state["timezone_exists"] is False:
        raise DeployError(
            f"{host.name}: base_timezone {settings.timezone!r} is not a time zone on this host "
            "(no file under /usr/share/zoneinfo); use a name like 'Europe/Berlin' or 'UTC'"
        )
    packages = settings.packages + _FAMILY_PACKAGES[family]

    if family == DEBIAN:
        debian_package_sources(state)
        apt.packages(name="Base packages", packages=packages)
    else:
        dnf.packages(name="Base packages", packages=packages)

    home = f"/home/{settings.admin_user}"
    server.user(
        name=f"Admin user {settings.admin_user}",
        user=settings.admin_user,
        home=home,
        shell="/bin/bash",
        create_home=True,
        public_keys=settings.admin_ssh_keys or None,
        delete_keys=True,
    )
    nopasswd = "NOPASSWD: " if settings.admin_passwordless_sudo else ""
    files.put(
        name="Sudo rights for the admin user",
        src=StringIO(f"{settings.admin_user} ALL=(ALL:ALL) {nopasswd}ALL\n"),
        dest=f"/etc/sudoers.d/90-{settings.admin_user}",
        mode="440",
        user="root",
        group="root",
    )
    files.link(
        name=f"Time zone {settings.timezone}",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{settings.timezone}",
    )
    if family == DEBIAN:
        files.put(
            name="Time zone name for Debian tools",
            src=StringIO(f"{settings.timezone}\n"),
            dest="/etc/timezone",
            mode="644",
        )
