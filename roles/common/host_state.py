"""What a role manages on a host, read in ONE round trip, and operations gated on it.

pyinfra's own operations each read their facts (a file's sha1, every installed package, every
systemd unit), one SSH round trip apiece, and ``systemctl show --all`` alone takes most of a
second on a busy host. A role instead reads the state of everything it manages with one
:class:`HostState` fact and calls pyinfra's operations only for what differs, so a converged
host costs one command per role. The operations still check the host themselves when they run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, dnf, files, systemd
from typing_extensions import override

from roles.common import prefetch
from roles.common.memo import host_memo
from roles.common.platform import profile
from roles.common.prefetch import Request


@dataclass(frozen=True)
class FileState:
    mode: str  # octal, as stat prints it: "644"
    owner: str  # "user:group"
    sha1: str


@dataclass
class State:
    files: dict[str, FileState] = field(default_factory=dict)  # only files that exist
    dirs: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (mode, "user:group")
    packages: dict[str, str] = field(default_factory=dict)  # installed package -> version
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # -> (is-enabled, is-active)
    probe: list[str] = field(default_factory=list)  # the role's own probe output lines


def parse(lines: list[str]) -> State:
    state = State()
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "file":
            mode, owner, sha1, path = rest.split(None, 3)
            state.files[path] = FileState(mode, owner, sha1)
        elif kind == "dir":
            mode, owner, path = rest.split(" ", 2)
            state.dirs[path] = (mode, owner)
        elif kind == "package":
            status, name, version = (rest.split() + ["", "", ""])[:3]
            if status[:2] in ("ii", "hi"):  # installed (or held); not "rc" leftovers
                state.packages[name] = version
        elif kind == "unit":
            name, enabled, active = (rest.split(" ", 2) + ["", ""])[:3]
            state.units[name] = (enabled.removeprefix("enabled="), active.removeprefix("active="))
        elif kind == "probe":
            state.probe.append(rest)
    return state


class HostState(FactBase[State]):
    """Files (mode, owner, sha1), folders (mode, owner), packages (version), systemd units
    (is-enabled, is-active) and the output of a role's ``probe`` shell snippet, each line
    tagged with its kind."""

    @override
    def command(self, paths=(), packages=(), units=(), probe="", dirs=()):
        parts: list = []
        if dirs:
            parts += [
                "for d in",
                *[QuoteString(d) for d in dirs],
                """; do [ -d "$d" ] && echo "dir $(stat -c '%a %U:%G' "$d") $d"; done;""",
            ]
        if paths:
            parts += [
                "for f in",
                *[QuoteString(p) for p in paths],
                """; do [ -f "$f" ] && echo "file $(stat -c '%a %U:%G' "$f") """
                """$(sha1sum < "$f" | cut -d' ' -f1) $f"; done;""",
            ]
        if packages:
            names = [QuoteString(p) for p in packages]
            # EL9 has no dpkg: rpm prints the same line for each wanted name that an installed
            # package provides (curl-minimal provides curl: `dnf install curl` would conflict).
            parts += [
                "if command -v dpkg-query >/dev/null; then",
                "dpkg-query -W -f='package ${db:Status-Abbrev} ${Package} ${Version}\\n'",
                *names,
                "2>/dev/null; else for p in",
                *names,
                """; do rpm -q --whatprovides --qf "package ii  $p %{VERSION}-%{RELEASE}\\n" """
                """"$p"; done 2>/dev/null | grep '^package ii '; fi;""",
            ]
        if units:
            parts += [
                "for u in",
                *[QuoteString(u) for u in units],
                '; do echo "unit $u enabled=$(systemctl is-enabled "$u" 2>/dev/null) '
                'active=$(systemctl is-active "$u" 2>/dev/null)"; done;',
            ]
        if probe:
            parts += ["{", probe, "; } 2>/dev/null | sed 's/^/probe /';"]
        return StringCommand(*parts, "true")

    @override
    def process(self, output: list[str]) -> State:
        return parse(output)

    @staticmethod
    @override
    def default() -> State:
        return State()


def _kwargs(paths=(), packages=(), units=(), probe: str = "", dirs=()) -> dict:
    names = sorted({spec.partition("=")[0] for spec in packages})
    return dict(
        paths=tuple(paths),
        packages=tuple(names),
        units=tuple(units),
        probe=probe,
        dirs=tuple(dirs),
    )


def request(**spec) -> Request:
    """What :func:`read` with the same arguments asks, for a role's prefetch reader."""
    return Request.of(HostState, **_kwargs(**spec))


def read(paths=(), packages=(), units=(), probe: str = "", dirs=()) -> State:
    """The state of what a role manages on the current host: the deploy's one prefetched
    read per host when the role declared it (:mod:`roles.common.prefetch`), else a round trip."""
    return prefetch.fact(host, HostState, **_kwargs(paths, packages, units, probe, dirs))


class _Unchanged:
    """Stands in for an operation that was not needed: ``did_change()`` is False."""

    @staticmethod
    def did_change() -> bool:
        return False


UNCHANGED = _Unchanged()
# What the helpers below return: pyinfra's operation, or UNCHANGED when none was needed.
OpResult = OperationMeta | _Unchanged


def after(
    ops: Iterable[OpResult],
    operation: Callable[..., OperationMeta],
    *,
    force: bool = False,
    **kwargs,
) -> OpResult:
    """``operation(**kwargs)`` run only if one of ``ops`` changed the host (always, with
    ``force``); not even planned when every op in ``ops`` was ``UNCHANGED`` and nothing forces
    it, so a converged host sees no skipped step."""
    ops = [op for op in ops if op is not UNCHANGED]
    if force:
        return operation(**kwargs)
    if not ops:
        return UNCHANGED
    return operation(**kwargs, _if=[lambda: any(op.did_change() for op in ops)])


def sha1(content: str) -> str:
    return hashlib.sha1(content.encode()).hexdigest()


def put(state: State, name: str, path: str, content: str, mode: str = "644",
        owner: str = "root:root") -> OpResult:  # fmt: skip
    """``files.put`` of ``content`` unless the file already has it, the mode and the owner."""
    if state.files.get(path) == FileState(mode.lstrip("0") or "0", owner, sha1(content)):
        host.noop(f"{path} is up to date")
        return UNCHANGED
    user, _, group = owner.partition(":")
    return files.put(name=name, src=StringIO(content), dest=path, mode=mode, user=user, group=group)


def directory(
    state: State, name: str, path: str, mode: str, owner: str | None = "root:root"
) -> OpResult:
    """``files.directory`` unless the folder exists with ``mode`` and ``owner`` (``None``: any
    owner, and the operation leaves it as it is)."""
    have = state.dirs.get(path)
    if have and have[0] == mode and owner in (None, have[1]):
        return UNCHANGED
    user, _, group = (owner or "").partition(":")
    return files.directory(name=name, path=path, mode=mode, user=user or None, group=group or None)


def absent(state: State, name: str, path: str) -> OpResult:
    """Remove ``path`` if it exists."""
    if path not in state.files:
        return UNCHANGED
    return files.file(name=name, path=path, present=False)


def missing(state: State, specs) -> list[str]:
    """The packages (``name`` or ``name=version``) not installed (at that version)."""
    result = []
    for spec in specs:
        name, _, version = spec.partition("=")
        have = state.packages.get(name)
        if have is None or (version and have != version):
            result.append(spec)
    return result


_PLAIN: list[tuple[frozenset[str], Callable]] = []


def plain_packages(*groups: str) -> Callable:
    """Register ``function(host) -> [name, ...]``: packages a role on hosts of ``groups`` needs
    from the OS's own repositories with nothing set up before them. The base role installs them
    in its one transaction (a fresh host: one apt run instead of one per role); the role's own
    :func:`packages` then finds them planned."""

    def register(function: Callable) -> Callable:
        _PLAIN.append((frozenset(groups), function))
        return function

    return register


def plain_for(target) -> list[str]:
    """Every registered plain package of ``target``, once each."""
    found = [n for groups, f in _PLAIN if groups & set(target.groups) for n in f(target)]
    return list(dict.fromkeys(found))


def packages(state: State, name: str, specs: list[str]) -> OpResult:
    """``apt.packages`` (EL9: ``dnf.packages``) for the packages not installed yet, nor
    installed by an earlier step of this run."""
    planned = host_memo(host, "packages").setdefault("planned", set())
    todo = [spec for spec in missing(state, specs) if spec not in planned]
    if not todo:
        host.noop(f"{', '.join(specs)} installed")
        return UNCHANGED
    planned.update(todo)
    install = apt.packages if profile(host).package_manager == "apt" else dnf.packages
    return install(name=name, packages=todo)


def packages_absent(state: State, name: str, names: list[str]) -> OpResult:
    """Remove those of ``names`` that are installed."""
    installed = [n for n in names if n in state.packages]
    if not installed:
        return UNCHANGED
    return apt.packages(name=name, packages=installed, present=False)


def service(
    state: State, name: str, unit: str, enabled: bool = True, running: bool | None = True
) -> OpResult:
    """``systemd.service`` only when the unit is not yet enabled/running as wanted."""
    is_enabled, is_active = state.units.get(unit, ("", ""))
    ok_enabled = (is_enabled == "enabled") == enabled
    ok_running = running is None or (is_active == "active") == running
    if ok_enabled and ok_running:
        return UNCHANGED
    return systemd.service(name=name, service=unit, enabled=enabled, running=running)
