"""Every host of the inventory validated at once, before any host plans an operation.

pyinfra runs deploy.py once per host, in parallel; the first host to get here validates them
all (settings, the inventory's shape, then the host facts the settings are checked against) and
every host raises the same single error naming every bad key of every host.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import gevent.lock
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_host

from roles import client, guest_vm, ollama, planner, preflight, proxy, tabbyapi, vfio, vllm
from roles.common import prefetch, registry, secrets
from roles.common.memo import host_memo
from roles.common.settings import (
    REGISTRY,
    Problem,
    RoleSettings,
    SettingsError,
    classes_for_groups,
    validate_host,
)

GROUPS = ("hypervisors", "ai_guests", "clients")
"""The inventory groups the deploy knows (deploy.py)."""

# Checks against each group's host facts, run when the host's settings are valid: each
# returns "key: why" lines.
FACT_CHECKS: dict[str, list[Callable]] = {
    "hypervisors": [
        preflight.problems,
        lambda host: [] if vfio.only(host) else guest_vm.host_problems(host),  # as deploy.py
    ],
    "ai_guests": [
        tabbyapi.host_problems,
        ollama.host_problems,
        vllm.host_problems,
        proxy.host_problems,
    ],
    "clients": [client.host_problems],
}


def validate_inventory(state) -> None:
    """Validate every active host once per run; raise the one SettingsError on every host."""
    memo = host_memo(state, "validation")  # on the real state, never the context proxy
    with memo.setdefault("lock", gevent.lock.Semaphore()):
        if "error" not in memo:
            memo["error"] = _error(state.inventory)
    if memo["error"] is not None:
        raise memo["error"]


def _error(inventory) -> SettingsError | None:
    registry.services()  # loads every service role, so its settings class is validated too
    by_host: dict[str, list[Problem]] = {}
    try:  # the secrets file and AICODER_* values, read now so a bad one refuses every host
        secrets.check_all()
    except secrets.SecretError as error:
        by_host["(secrets)"] = error.problems
    inventory_problems = shape_problems(inventory)
    if inventory_problems:
        by_host["(inventory)"] = inventory_problems
    hosts = list(inventory.get_active_hosts())
    for host in hosts:
        with ctx_host.use(host):
            found = settings_problems(host)
        if found:
            by_host[host.name] = found
    # Every fact the deploy will read on each valid host, in one command per host, all hosts at
    # once; the checks below and the roles are then served from it (roles/common/prefetch.py).
    prefetch.load_all([h for h in hosts if h.name not in by_host])
    for host in hosts:
        if host.name in by_host:
            continue
        with ctx_host.use(host):
            found = fact_problems(host)
        if found:
            by_host[host.name] = found
    return SettingsError.for_hosts(by_host) if by_host else None


def host_problems(host) -> list[Problem]:
    """Every problem of one host: its settings, then (when they are valid) its facts."""
    return settings_problems(host) or fact_problems(host)


def settings_problems(host) -> list[Problem]:
    """The host's settings' problems (the planner's model settings filled in first)."""
    try:
        if "ai_guests" in host.groups:
            planner.apply_plan(host)  # fills the model settings the user left to the planner
        validate_host(host, classes_for_groups(host.groups))
    except SettingsError as error:
        return error.problems
    except PyinfraError as error:  # a secrets file that cannot be read, say
        return [("secrets", str(error))]
    return []


def fact_problems(host) -> list[Problem]:
    """What the host's facts rule out for its (valid) settings."""
    problems: list[Problem] = []
    for group in sorted(set(host.groups) & set(FACT_CHECKS)):
        for check in FACT_CHECKS[group]:
            problems += [_keyed(line) for line in check(host)]
    return problems


def _keyed(line: str) -> Problem:
    """("key", "why") of a "key: why" line (else the whole line, under "host facts")."""
    found = re.match(r"([a-z_][a-z0-9_]*(\[\d+\](\.[a-z_]+)?)?): (.*)", line, re.S)
    return (found.group(1), found.group(4)) if found else ("host facts", line)


def shape_problems(inventory) -> list[Problem]:
    """The inventory's own mistakes: a host in two groups that exclude each other, a group (or
    group_data file) the deploy does not know, a setting in a group that does not use it."""
    problems = []
    for host in inventory.get_active_hosts():
        if {"hypervisors", "ai_guests"} <= set(host.groups):
            problems.append(
                (
                    host.name,
                    "is in both hypervisors and ai_guests: a hypervisor hands its GPU to its VMs "
                    "(vfio-pci), a guest drives it (NVIDIA driver); keep it in one group",
                )
            )
    for host in inventory.get_active_hosts():
        if not set(host.groups) & set(GROUPS):
            typo = [c for g in host.groups for c in difflib.get_close_matches(g, GROUPS, n=1)]
            hint = f"did you mean {typo[0]!r}?" if typo else f"put it in one of {', '.join(GROUPS)}"
            problems.append((host.name, f"is in no group the deploy knows; {hint}"))
    for group, data in sorted(inventory.group_data.items()):
        if data and group not in GROUPS and not group.startswith("@"):  # @...: pyinfra's own
            close = difflib.get_close_matches(group, GROUPS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use {', '.join(GROUPS)}"
            problems.append(
                (f"group_data/{group}.py", f"group {group!r} is not one the deploy uses; {hint}")
            )
    for group in GROUPS:
        for key in sorted(inventory.get_group_data(group)):
            owner = _owner(key)
            if owner is not None and owner.GROUPS and group not in owner.GROUPS:
                problems.append(
                    (
                        key,
                        f"is set for group {group!r} (group_data/{group}.py or inventory.py), "
                        f"which does not use it: it applies to {', '.join(owner.GROUPS)}; "
                        "move it there",
                    )
                )
    return problems


def _owner(key: str) -> type[RoleSettings] | None:
    """The settings class that owns ``key``, if any."""
    for cls in REGISTRY.values():
        if any(key == known for known, _, _ in cls.docs()):
            return cls
    return None
