"""Every fact the deploy reads while it plans, read in ONE command per host.

pyinfra caches no facts and plans the whole deploy before any operation runs, so every read at
plan time sees the host as it was before the run. Roles therefore declare up front what they will
read (a function registered with :func:`reader`, returning :class:`Request` s built from the same
code their deploy uses); :func:`load_all` sends each host one command holding every request, and
:func:`fact` serves a role's read from that answer. A read nobody declared, or one whose part of
the answer failed, goes to the host on its own as before: a mismatch costs a round trip, never a
wrong answer. Reads while operations run (reboot checks, ``_if`` callbacks) always go to the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
from pyinfra import logger
from pyinfra.api import FactBase, StringCommand
from pyinfra.context import ctx_host, ctx_state
from typing_extensions import override

from roles.common.memo import host_memo

_MARK = "@@aicoder-fact"


@dataclass(frozen=True)
class Request:
    """One fact with its arguments (``_sudo=False`` and other ``_`` arguments included)."""

    fact: type[FactBase]
    kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, fact: type[FactBase], **kwargs) -> Request:
        return cls(fact, tuple(sorted(kwargs.items())))

    @property
    def key(self) -> str:
        return f"{self.fact.__module__}.{self.fact.__name__}{self.kwargs!r}"

    @property
    def fact_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.kwargs if not k.startswith("_")}

    @property
    def sudo(self) -> bool | None:
        """``False`` when the fact must run without sudo, else None (the host's setting)."""
        return dict(self.kwargs).get("_sudo")


Reader = Callable[[Any], Iterable[Request]]
_READERS: list[tuple[frozenset[str], Reader]] = []


def reader(*groups: str) -> Callable[[Reader], Reader]:
    """Register ``function(host) -> [Request, ...]``: what a role reads on hosts of ``groups``.
    It may raise (settings that validation refuses): its reads are then left to the role."""

    def register(function: Reader) -> Reader:
        _READERS.append((frozenset(groups), function))
        return function

    return register


def requests(host) -> list[Request]:
    """Every registered read for ``host``, once each, in registration order."""
    found: dict[str, Request] = {}
    for groups, function in _READERS:
        if not groups & set(host.groups):
            continue
        try:
            wanted = list(function(host))
        except Exception as error:  # noqa: BLE001 - validation reports it; the role reads alone
            logger.debug(f"{host.name}: prefetch of {function.__module__} skipped: {error}")
            continue
        for request in wanted:
            found.setdefault(request.key, request)
    return list(found.values())


class Batch(FactBase[dict[int, tuple[int, list[str]]]]):
    """Several facts' commands in one shell: each one's output between markers with its exit
    status, in a subshell of its own so one failing (or exiting) leaves the others alone."""

    @override
    def command(self, commands: tuple) -> StringCommand:
        parts: list = []
        for index, command in enumerate(commands):
            parts += [f"echo '{_MARK} {index}'; (", command, f'); echo "{_MARK}-end {index} $?";']
        return StringCommand(*parts, "true")

    @override
    def process(self, output: list[str]) -> dict[int, tuple[int, list[str]]]:
        result: dict[int, tuple[int, list[str]]] = {}
        lines: list[str] = []
        for line in output:
            if line.startswith(f"{_MARK}-end "):
                index, status = line.split()[1:3]
                result[int(index)] = (int(status), lines)
            elif line.startswith(f"{_MARK} "):
                lines = []
            else:
                lines.append(line)
        return result


def split(command: str) -> list[str]:
    """The commands a :class:`Batch` command holds, in order (for fake hosts in tests)."""
    pattern = rf"echo '{_MARK} (\d+)'; \( (.*?) \); echo \"{_MARK}-end \1 \$\?\";"
    return [found.group(2) for found in re.finditer(pattern, command, re.S)]


def answer(outputs: Iterable[tuple[int, list[str]]]) -> list[str]:
    """A :class:`Batch` command's output for each command's (exit status, stdout lines)."""
    lines: list[str] = []
    for index, (status, stdout) in enumerate(outputs):
        lines += [f"{_MARK} {index}", *stdout, f"{_MARK}-end {index} {status}"]
    return lines


def _batchable(host, request: Request) -> bool:
    """A fact that runs as the others do: sudo alike, no precondition or requires_command."""
    fact = request.fact()
    attribute: Any = fact.requires_command
    requires = attribute(**request.fact_kwargs) if callable(attribute) else attribute
    if requires or fact.shell_executable:
        return False
    if type(fact).check_preconditions is not FactBase.check_preconditions:
        return False
    host_sudo = bool(host.data.get("_sudo", host.state.config.SUDO))
    return request.sudo is None or request.sudo == host_sudo


def load(host) -> None:
    """Read every registered fact of ``host`` in one command; :func:`fact` serves them."""
    memo = host_memo(host, "prefetch")
    wanted = [r for r in requests(host) if _batchable(host, r)]
    if not wanted:
        memo["answers"] = {}
        return
    commands = tuple(r.fact().command(**r.fact_kwargs) for r in wanted)
    raw = host.get_fact(Batch, commands=commands)
    answers = {}
    for index, request in enumerate(wanted):
        status, lines = raw.get(index, (1, []))
        if status != 0:  # read alone later, where pyinfra reports the failure as usual
            continue
        fact = request.fact()
        try:
            answers[request.key] = fact.process(lines) if lines else fact.default()
        except Exception as error:  # noqa: BLE001 - the role's own read reports it
            logger.debug(f"{host.name}: prefetched {request.key} not parsed: {error}")
    memo["answers"] = answers


def load_all(hosts: Iterable) -> None:
    """:func:`load` for each host at once (one greenlet each, as pyinfra reads facts)."""

    def one(host) -> None:
        with ctx_state.use(host.state), ctx_host.use(host):
            load(host)

    gevent.joinall([gevent.spawn(one, host) for host in hosts], raise_error=True)


def fact(host, cls: type[FactBase], **kwargs):
    """``host.get_fact(cls, **kwargs)``, served from the prefetched answer while planning."""
    answers = host_memo(host, "prefetch").get("answers", {})
    key = Request.of(cls, **kwargs).key
    if key in answers and not host.state.is_executing:
        return answers[key]
    return host.get_fact(cls, **kwargs)
