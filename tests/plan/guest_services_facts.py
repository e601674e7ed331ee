"""Fake host state for the plan tests of hf_tools, tabbyapi and ollama.

Each of these roles reads what it manages with one HostState fact (roles/common/host_state.py)
plus its own probe; these helpers build the lines such a read prints on a guest in a described
state: files that hold exactly what a fresh run uploads, the packages and units, and the probe
lines in the format the roles' probes print (see tests/plan/fixtures/README-guest-services.md
for the recorded ones).
"""

from __future__ import annotations

import re

from gpu_stack_facts import NVIDIA_STATE, converged_driver
from harness import debian_release, run_plan

from roles.common.platform import DEBIAN_12, Release

ADDRESS = "192.168.1.20"
# Where 'auto' binds behind the firewall (every IPv4 address), and where the guest reaches it.
LISTEN, LOCAL = "0.0.0.0", "127.0.0.1"
LAN = {"firewall_allowed_networks": ["192.168.1.0/24"]}
# The services as they listen without the TLS front door ('auto': the LAN); the front door and
# the services behind it: tests/plan/test_proxy_plan.py.
PLAIN = {"proxy_plain_http": True}

# Each role's HostState command, told apart by its probe (first match wins, see @fake).
HF_STATE = re.compile(r"import huggingface_hub as h.*sed 's/\^/probe /'")
TABBY_STATE = re.compile(r"echo head \$\(git .*sed 's/\^/probe /'")
OLLAMA_STATE = re.compile(r"echo image present.*sed 's/\^/probe /'")


def responses(extra: dict | None = None, release: Release = DEBIAN_12) -> dict:
    """A Debian guest (``release``) whose primary address is ADDRESS, with the NVIDIA driver
    installed and loaded on its GPU (so GPU services may start), plus ``extra`` (matched
    first)."""
    return {
        **(extra or {}),
        NVIDIA_STATE: converged_driver(release=release),
        "ip -4 -o route get 192.0.2.1": f"route {ADDRESS}",
        **debian_release(release.version),
    }


def unit_line(unit: str, enabled: str = "enabled", active: str = "active") -> str:
    return f"unit {unit} enabled={enabled} active={active}"


def probe_lines(lines) -> list[str]:
    return [f"probe {line}" for line in lines]


def address_lines() -> list[str]:
    """What the address probe prints on a guest whose default route leaves from ADDRESS."""
    return [f"route {ADDRESS}", f"addr {ADDRESS}/24"]


def use_secrets(monkeypatch, tmp_path, api_key: str, admin_key: str) -> None:
    """The user's secrets for a test: the tabbyAPI keys given, nothing else, no real file."""
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    monkeypatch.setenv("AICODER_TABBYAPI_API_KEY", api_key)
    monkeypatch.setenv("AICODER_TABBYAPI_ADMIN_KEY", admin_key)
    monkeypatch.delenv("AICODER_HF_TOKEN", raising=False)


def guest_plan(data: dict | None = None, extra: dict | None = None, release: Release = DEBIAN_12):
    """The whole deploy planned for an ai_guests host (``release``) with ``data`` and ``extra``
    answers."""
    plan = run_plan({"ai_guests": {**LAN, **PLAIN, **(data or {})}}, responses(extra, release))
    assert plan.error is None, plan.error
    return plan


def own(plan, pattern: re.Pattern) -> list[str]:
    """Names of the changed operations whose name matches ``pattern``."""
    return [name for name in plan.names() if pattern.match(name)]
