"""The service registry: what tabbyAPI and Ollama publish, and how consumers iterate over it."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from roles.common import ports, registry
from roles.common.settings import HostData

GUEST = ("ai_guests",)


def settings_of(data: dict):
    """settings_of for the registry: each class built from ``data`` (valid, or the test fails).
    The services' own endpoints, without the TLS front door (tests/unit/test_proxy.py)."""

    def of(cls):
        settings, problems = cls.problems_in({"proxy_plain_http": True, **data})
        assert not problems, problems
        return settings

    return of


def test_tabbyapi_and_ollama_are_registered_in_the_tables_order():
    assert [s.name for s in registry.services()] == ["tabbyapi", "ollama", "vllm"]
    assert registry.service("ollama").settings.PREFIX == "ollama"
    with pytest.raises(KeyError, match="tabbyapi, ollama, vllm"):
        registry.service("nope")


def test_defaults_publish_both_endpoints_from_their_settings():
    tabby, ollama = registry.endpoints(settings_of({}), GUEST)
    assert (tabby.service, tabby.port, tabby.listen, tabby.listen_key) == (
        "tabbyapi",
        5000,
        "auto",
        "tabbyapi_host",
    )
    assert (tabby.auth, tabby.key_secret, tabby.health_path) == (
        "bearer",
        "tabbyapi_api_key",
        "/health",
    )
    assert tabby.base_url("10.0.0.7") == "http://10.0.0.7:5000/v1"
    assert (ollama.port, ollama.port_key, ollama.auth, ollama.provider) == (
        11434,
        "ollama_port",
        "none",
        "ollama",
    )
    assert ollama.base_url("fd00::7") == "http://[fd00::7]:11434"
    assert ollama.base_url("h", ollama.health_path) == "http://h:11434/api/version"
    assert tabby.own is tabby and tabby.upstream is None


def test_only_enabled_services_of_the_hosts_groups_are_listed():
    data = {"tabbyapi_enabled": False, "ollama_port": 11500}
    assert [e.port for e in registry.endpoints(settings_of(data), GUEST)] == [11500]
    assert registry.endpoints(settings_of({}), ("hypervisors",)) == []


def test_a_front_publishes_its_endpoint_and_keeps_the_services_as_upstream(monkeypatch):
    def front(endpoint, settings_of):
        return registry.fronted(endpoint, scheme="https", port=endpoint.port + 10000)

    module = types.ModuleType("fake_front")
    module.front = front  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_front", module)
    monkeypatch.setattr(registry, "FRONT_MODULES", ("fake_front",))
    registry._fronts.cache_clear()
    try:
        tabby, _ = registry.endpoints(settings_of({}), GUEST)
    finally:
        registry._fronts.cache_clear()
    assert tabby.base_url("h") == "https://h:15000/v1"
    assert (tabby.own.scheme, tabby.own.port, tabby.own.listen) == ("http", 5000, "auto")


def test_models_come_from_each_services_settings():
    tabby = registry.service("tabbyapi")
    (model,) = tabby.models(settings_of({})(tabby.settings), None)
    assert model.roles == ("chat", "edit", "apply", "autocomplete") and model.tools
    assert model.context == 32768
    ollama = registry.service("ollama")
    data = {"ollama_models": ["nomic-embed-text", "qwen2.5-coder:7b"]}
    embed, other = ollama.models(settings_of(data)(ollama.settings), None)
    assert embed.roles == ("embed",) and other.roles == ()  # the client's model_roles decide


@pytest.mark.parametrize(
    ("data", "clash"),
    [
        ({"ollama_port": 5000}, True),
        ({"ollama_port": 5000, "tabbyapi_host": "127.0.0.1", "ollama_bind_address": "auto"}, False),
        ({"ollama_port": 5000, "tabbyapi_host": "0.0.0.0", "ollama_bind_address": "::1"}, True),
        ({"ollama_port": 5000, "tabbyapi_enabled": False}, False),
        ({"ollama_port": 5001}, False),
    ],
)
def test_a_port_clash_is_named_once_on_the_later_service(data, clash):
    host = HostData(data)
    problems = [
        p for cls in (s.settings for s in registry.services()) for p in cls.checked(host)[1]
    ]
    expected = [
        (
            "ollama_port",
            "5000 is tabbyAPI's port too (tabbyapi_port) on the same address; give Ollama "
            "another one (its default is 11434)",
        )
    ]
    assert problems == (expected if clash else [])


@pytest.mark.parametrize("plain_http", [False, True])
def test_an_address_the_front_door_cannot_forward_to_is_refused_for_every_service(plain_http):
    """Behind the door a server must listen where the door forwards (127.0.0.1): an explicit
    LAN address would answer 502 through the door (the Vagrant inventory once set one)."""
    data: dict[str, object] = {
        "tabbyapi_host": "192.168.56.11",
        "ollama_bind_address": "192.168.56.11",
    }
    data |= {"vllm_enabled": True, "vllm_host": "10.0.0.5", "proxy_plain_http": plain_http}
    problems = [p for s in registry.services() for p in s.settings.checked(HostData(data))[1]]
    keys = [key for key, why in problems if "front door cannot forward" in why]
    assert keys == ([] if plain_http else ["tabbyapi_host", "ollama_bind_address", "vllm_host"])
    fine: dict[str, object] = {"tabbyapi_host": "0.0.0.0", "ollama_bind_address": "127.0.0.1"}
    fine |= {"vllm_host": "auto"}
    fine |= {"vllm_enabled": True}
    assert [p for s in registry.services() for p in s.settings.checked(HostData(fine))[1]] == []


def test_sshs_port_is_refused_for_every_service():
    host = HostData({"tabbyapi_port": 22, "ollama_port": 22})
    problems = [p for s in registry.services() for p in s.settings.checked(host)[1]]
    assert [key for key, _ in problems if "SSH port" in _] == ["tabbyapi_port", "ollama_port"]


def test_listen_addresses_overlap_as_sockets_do():
    assert ports.may_overlap("auto", "10.0.0.7") and ports.may_overlap("0.0.0.0", "127.0.0.1")
    assert not ports.may_overlap("auto", "127.0.0.1") and not ports.may_overlap(
        "10.0.0.1", "10.0.0.2"
    )


# --- nobody names a service role -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = ("roles/firewall", "roles/client", "roles/common", "roles/planner")
SERVICE_ROLES = ("tabbyapi", "ollama", "vllm")


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import statement of ``tree`` names (``from roles import x``: roles.x)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_consumer_imports_a_service_role():
    """The firewall, client, common and planner code reach services through the registry only
    (issue 15: a new service touches the registry's table and its own role)."""
    offenders = []
    for folder in CONSUMERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imported_modules(ast.parse(path.read_text(), str(path))):
                parts = module.split(".")
                if parts[0] == "roles" and len(parts) > 1 and parts[1] in SERVICE_ROLES:
                    offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert not offenders, "import through roles.common.registry instead:\n" + "\n".join(offenders)


def test_the_import_check_sees_every_form():
    source = "import roles.ollama.settings\nfrom roles import tabbyapi\nfrom roles.vllm import x\n"
    modules = imported_modules(ast.parse(source))
    assert {"roles.ollama.settings", "roles.tabbyapi", "roles.vllm"} <= modules
