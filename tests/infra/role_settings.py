"""A role's settings for the host under test, computed as the deploy computed them."""

from __future__ import annotations

import pytest

from roles.common.platform import RELEASES, Release


def settings_of(cls, host_data: dict):
    """``cls`` settings of the host; invalid inventory values fail the test with the problems."""
    settings, problems = cls.problems_in(host_data)
    assert not problems, f"invalid {cls.PREFIX} settings in the inventory: {problems}"
    return settings


def enabled_settings(cls, host_data: dict, why: str = ""):
    """Like ``settings_of``, but skip the test where the role is turned off on this host."""
    settings = settings_of(cls, host_data)
    if not settings.enabled:
        pytest.skip(f"{cls.key('enabled')} is False on this host{why}")
    return settings


def listen_on(guest, value: str, host_data: dict) -> str | None:
    """Where a service whose listen setting is ``value`` listens on ``guest``, resolved as the
    deploy resolved it (roles/common/services.resolve_on)."""
    from roles.common.services import resolve_on
    from roles.firewall.settings import FirewallSettings
    from roles.proxy.settings import ProxySettings

    filtered = settings_of(FirewallSettings, host_data).enabled
    proxied = not settings_of(ProxySettings, host_data).plain_http  # behind the TLS front door
    return resolve_on(value, guest.check_output, filtered, proxied)


def release_of(host) -> Release:
    """The platform profile of a Debian host under test, from its os-release."""
    major = host.system_info.release.split(".")[0]
    release = RELEASES.get(f"debian{major}")
    assert release is not None, f"Debian {major} is not a release the deploy supports"
    return release
