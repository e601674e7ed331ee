"""Which OS family a host runs, decided in one place from pyinfra's facts."""

from __future__ import annotations

from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import LinuxDistribution

from roles.common import prefetch
from roles.common.memo import host_memo

DEBIAN = "debian"
EL9 = "el9"

_EL_IDS = {"rhel", "rocky", "almalinux", "centos", "ol"}


def family_of(distro: dict) -> str | None:
    """'debian' for Debian 12, 'el9' for the RHEL 9 family, None for anything else."""
    meta = distro.get("release_meta") or {}
    ids = {meta.get("ID", "").lower(), *meta.get("ID_LIKE", "").lower().split()}
    major = distro.get("major")
    if meta.get("ID", "").lower() == "debian" and major == 12:
        return DEBIAN
    if ids & _EL_IDS and major == 9:
        return EL9
    return None


@prefetch.reader("hypervisors", "ai_guests")
def reads(host) -> list[prefetch.Request]:
    """The release files :func:`os_family` reads."""
    return [prefetch.Request.of(LinuxDistribution)]


def os_family(host, allowed: tuple[str, ...] = (DEBIAN, EL9)) -> str:
    """The host's OS family, or a DeployError naming what is supported."""
    memo = host_memo(host, "platform")
    if "distro" not in memo:  # pyinfra 3 does not cache facts: read the release files once
        memo["distro"] = prefetch.fact(host, LinuxDistribution)
    distro = memo["distro"]
    family = family_of(distro)
    if family not in allowed:
        pretty = distro.get("release_meta", {}).get("PRETTY_NAME") or distro.get("name")
        supported = {DEBIAN: "Debian 12", EL9: "RHEL/Rocky/AlmaLinux 9"}
        raise DeployError(
            f"{host.name}: {pretty or 'unknown OS'} is not supported here; "
            f"supported: {', '.join(supported[a] for a in allowed)}"
        )
    return family
