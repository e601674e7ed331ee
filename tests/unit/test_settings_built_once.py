"""Each role's settings are built once per host, although cross-checks need other roles' too."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pyinfra.api.host import Host

from roles.common.settings import RoleSettings, classes_for_groups, validate_host
from roles.firewall.settings import FirewallSettings
from roles.nvidia_driver.settings import NvidiaDriverSettings
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi.settings import TabbyapiSettings


def test_guest_validation_builds_each_settings_class_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: Counter[str] = Counter()
    for cls in (FirewallSettings, NvidiaDriverSettings, OllamaSettings, TabbyapiSettings):
        bound = cls.problems_in

        def counting(klass: type[RoleSettings], data: dict[str, Any], _bound: Any = bound) -> Any:
            built[klass.__name__] += 1
            return _bound(data)

        monkeypatch.setattr(cls, "problems_in", classmethod(counting))
    data = {"firewall_allowed_networks": ["192.168.1.0/24"]}
    host = cast(Host, SimpleNamespace(name="guest", data=SimpleNamespace(dict=lambda: dict(data))))

    validate_host(host, classes_for_groups(["ai_guests"]))

    # Before: tabbyAPI's and the driver's twice (Ollama's checks), the firewall's three times.
    assert built == {
        "FirewallSettings": 1,
        "NvidiaDriverSettings": 1,
        "OllamaSettings": 1,
        "TabbyapiSettings": 1,
    }
    assert OllamaSettings.from_host(host).port == 11434  # served from the host's memo
    assert built["OllamaSettings"] == 1
