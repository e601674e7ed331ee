"""Typed, validated role settings built from pyinfra host data.

Each role declares one frozen dataclass subclassing :class:`RoleSettings`. Its fields are the
role's knobs: the host-data key is ``<PREFIX>_<field>`` (``docker_source``), the default and a
one-line doc live on the field, and checks run before any operation is planned. Every problem on
a host is collected into one :class:`SettingsError` that names each key and says how to fix it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable
from math import isfinite
from typing import Any, ClassVar, Self

from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from typing_extensions import override

from roles.common import checks
from roles.common.memo import host_memo

Check = Callable[[Any], str | None]
Problem = tuple[str, str]  # (key, what is wrong and how to fix it)

REGISTRY: dict[str, type[RoleSettings]] = {}


class SettingsError(PyinfraError):
    """Bad settings for a host; the message lists every bad key."""

    def __init__(self, host_name: str, problems: Iterable[Problem]):
        self.problems = list(problems)
        lines = [f"  - {key}: {msg}" for key, msg in self.problems]
        super().__init__(
            f"Invalid settings for host {host_name!r} "
            f"(set them in group_data/*.py or the inventory; nothing was changed):\n"
            + "\n".join(lines)
        )

    @classmethod
    def for_hosts(cls, by_host: dict[str, list[Problem]]) -> SettingsError:
        """One error for every host's problems (a single host reads as before)."""
        if len(by_host) == 1:
            ((name, problems),) = by_host.items()
            return cls(name, problems)
        error = cls("", [p for problems in by_host.values() for p in problems])
        lines = [
            f"  host {name!r}:\n" + "\n".join(f"    - {key}: {msg}" for key, msg in problems)
            for name, problems in by_host.items()
        ]
        error.args = (
            f"Invalid settings on {len(by_host)} hosts (set them in group_data/*.py or the "
            "inventory; nothing was changed on any host):\n" + "\n".join(lines),
        )
        return error


def setting(default: Any, doc: str, *checks: Check) -> Any:
    """Declare one setting: its default, a one-line doc and extra value checks."""
    meta = {"doc": doc, "checks": checks}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value):
    return copy.deepcopy(value)


class RoleSettings:
    """Base of every role's settings dataclass."""

    PREFIX: ClassVar[str]
    # Set by @dataclass on each subclass; declared so that dataclasses.fields(cls) type-checks.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    GROUPS: ClassVar[tuple[str, ...]] = ()

    @override
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "PREFIX" in cls.__dict__:
            REGISTRY[cls.PREFIX] = cls

    def check(self) -> list[Problem]:
        """Checks across fields; override in a role. Runs only when every field is valid."""
        return []

    @classmethod
    def key(cls, name: str) -> str:
        return f"{cls.PREFIX}_{name}"

    @classmethod
    def docs(cls) -> list[tuple[str, Any, str]]:
        """(key, default, doc) rows for the README's settings tables."""
        rows = []
        for f in dataclasses.fields(cls):
            factory = f.default_factory
            default = f.default if factory is dataclasses.MISSING else factory()
            rows.append((cls.key(f.name), default, f.metadata.get("doc", "")))
        return rows

    @classmethod
    def problems_in(cls, data: dict[str, Any]) -> tuple[Self | None, list[Problem]]:
        """Build the settings from a host-data dict; return (settings or None, problems)."""
        hints = typing.get_type_hints(cls)
        values, problems = {}, []
        for f in dataclasses.fields(cls):
            key = cls.key(f.name)
            if key not in data:
                continue
            value = data[key]
            expected = hints[f.name]
            if not type_matches(value, expected):
                problems.append(
                    (key, f"got {value!r} ({type(value).__name__}); expected {type_name(expected)}")
                )
                continue
            for check in (text_problem, *f.metadata.get("checks", ())):
                msg = check(value)
                if msg:
                    problems.append((key, msg))
                    break
            else:
                values[f.name] = value
        instance = cls(**values)
        if not problems:
            return instance, instance.check()
        # Checks across fields still run over the good values (the bad ones at their defaults),
        # so one run names every problem; a finding about a key already refused is left out.
        bad = {key for key, _ in problems}
        try:
            across = [p for p in instance.check() if p[0] not in bad]
        except Exception:  # noqa: BLE001 (a check assuming another field's validity: skip)
            across = []
        return None, problems + across

    @classmethod
    def checked(cls, data: dict[str, Any]) -> tuple[Self | None, list[Problem]]:
        """:meth:`problems_in`, built once per :class:`HostData` (a role's cross-check builds
        another role's settings too: tabbyAPI's for Ollama, the firewall's for the SSH port)."""
        built = data.built if isinstance(data, HostData) else None
        if built is None:
            return cls.problems_in(data)
        if cls not in built:
            built[cls] = cls.problems_in(data)
        return built[cls]

    @classmethod
    def from_host(cls, host: Host) -> Self:
        """The validated settings of ``host`` (cached on the host), or a SettingsError."""
        cache = host_memo(host, "settings")
        if cls.PREFIX not in cache:
            instance, problems = cls.problems_in(host.data.dict())
            if problems:
                raise SettingsError(host.name, problems)
            cache[cls.PREFIX] = instance
        return cache[cls.PREFIX]


def text_problem(value: Any) -> str | None:
    """Every string in a value (list items, dict keys and values too) is free of newlines and
    control characters: it lands in a file or a command line, where one would split a line."""
    if isinstance(value, str):
        return checks.control_character(value)
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list | tuple)
        else ()
    )
    for name, item in items:
        for part in (name, item) if isinstance(value, dict) else (item,):
            problem = text_problem(part)
            if problem:
                return f"{name!r}: {problem}" if isinstance(value, dict) else problem
    return None


class HostData(dict[str, Any]):
    """One host's data while its settings are validated, with each class built from it once."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.built: dict[type, tuple[Any, list[Problem]]] = {}


def type_matches(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits a simple annotation: scalars, ``X | None``, list[X], dict[K, V]."""
    origin = typing.get_origin(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(expected) or (Any,)
        return isinstance(value, list | tuple) and all(type_matches(v, item) for v in value)
    if origin is dict:
        k, v = typing.get_args(expected) or (Any, Any)
        return isinstance(value, dict) and all(
            type_matches(a, k) and type_matches(b, v) for a, b in value.items()
        )
    if expected is float:  # NaN and infinity pass every comparison check: refuse them here
        return isinstance(value, int | float) and not isinstance(value, bool) and isfinite(value)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "None"
    if origin is list:
        return f"a list of {type_name(typing.get_args(expected)[0])}"
    if origin is dict:
        k, v = typing.get_args(expected)
        return f"a dict of {type_name(k)} to {type_name(v)}"
    names = {str: "a string", int: "an integer", bool: "True or False", float: "a finite number"}
    return names.get(expected, getattr(expected, "__name__", str(expected)))


def unknown_keys(data: dict[str, Any], classes: Iterable[type[RoleSettings]]) -> list[Problem]:
    """Keys that look like a role's settings but are not one (typos), with a suggestion: any
    key under the prefix of a role in ``classes``, and any key very close to a known setting
    (a misspelt prefix such as ``fireewall_ssh_port``)."""
    known = {f"{c.PREFIX}_{f.name}" for c in REGISTRY.values() for f in dataclasses.fields(c)}
    prefixes = [c.PREFIX + "_" for c in classes]
    problems = []
    for key in sorted(data):
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.9)
        if not (near or any(key.startswith(p) for p in prefixes)):
            continue
        hint = f"did you mean {close[0]!r}?" if close else "see the README's settings tables"
        problems.append((key, f"unknown setting; {hint}"))
    return problems


def validate_host(host, classes: Iterable[type[RoleSettings]]) -> None:
    """Validate every settings class for ``host`` at once; one SettingsError lists all problems."""
    classes = list(classes)
    data = HostData(host.data.dict())
    problems = unknown_keys(data, classes)
    cache = host_memo(host, "settings")
    for cls in classes:
        instance, found = cls.checked(data)
        problems.extend(found)
        if instance is not None and not found:
            cache[cls.PREFIX] = instance
    if problems:
        raise SettingsError(host.name, problems)


def classes_for_groups(groups: Iterable[str]) -> list[type[RoleSettings]]:
    """The registered settings classes that apply to a host in ``groups``."""
    groups = set(groups)
    return [c for c in REGISTRY.values() if not c.GROUPS or groups & set(c.GROUPS)]
