"""Helpers for roles that run network services: the address to listen on, files holding
secrets, and waiting until a service answers (failing with its last log lines if it never does).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd
from typing_extensions import override

from roles.common import checks, host_state
from roles.common.host_state import UNCHANGED, FileState, OpResult, State
from roles.common.memo import host_memo
from roles.common.opname import op_name

# `ip route get` only looks the route up; nothing is sent to this documentation address. An
# address with a lease (DHCP, SLAAC) carries the "dynamic" flag in `ip addr`.
ADDRESS_PROBE = (
    "ip -4 -o route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \\([0-9.]*\\).*/route \\1/p'; "
    "ip -4 -o addr show scope global 2>/dev/null | "
    'awk \'{print "addr", $4, (/ dynamic / ? "dynamic" : "")}\''
)
ALL_IPV4 = "0.0.0.0"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class HostAddress:
    """The host's primary IPv4 address (None if it has none) and whether DHCP leased it."""

    address: str | None
    dynamic: bool = False


class PrimaryAddress(FactBase):
    """The guest's primary IPv4 address: the source of its default route, else its first global
    address; with whether it is leased (DHCP), so may change."""

    @override
    def command(self) -> str:
        return ADDRESS_PROBE

    @override
    def process(self, output: list[str]) -> HostAddress:
        return parse_host_address(output)


def parse_host_address(lines: list[str]) -> HostAddress:
    found: dict[str, str] = {}
    dynamic: set[str] = set()
    for line in lines:
        kind, _, value = line.strip().partition(" ")
        address, _, flags = value.partition(" ")
        address = address.split("/")[0]
        found.setdefault(kind, address)
        if kind == "addr" and "dynamic" in flags.split():
            dynamic.add(address)
    for kind in ("route", "addr"):
        try:
            address = str(ipaddress.IPv4Address(found.get(kind, "")))
        except ValueError:
            continue
        return HostAddress(address, address in dynamic)
    return HostAddress(None)


def parse_primary_address(lines: list[str]) -> str | None:
    return parse_host_address(lines).address


def listen_address(value: str, key: str, filtered: bool, known: HostAddress | None = None) -> str:
    """``value`` with 'auto' resolved. With the firewall role filtering the host's ports
    (``filtered``), 'auto' is every IPv4 address: the service keeps listening when DHCP hands the
    host a new address, and the firewall admits only the allowed networks. Without the firewall
    it is the host's primary address, refused when DHCP leased it (the service would stop
    answering at the next new lease). Behind the TLS front door (roles/proxy) it is loopback.
    ``known``: the address a role's own probe read already."""
    from roles.proxy.settings import proxied  # the proxy's settings import this module's users

    if value != "auto":
        return value
    if proxied(host):
        return LOOPBACK
    if filtered:
        return ALL_IPV4
    if known and known.address:
        host_memo(host, "services")["address"] = known
    return fixed_address(host_address(host), host.name, key)


def service_listen(value: str, key: str, known: HostAddress | None = None) -> str:
    """:func:`listen_address` of a service on the current host, filtered when the firewall role
    is on there."""
    # Imported here: the firewall role imports the services' settings to open their ports.
    from roles.firewall.settings import FirewallSettings

    return listen_address(value, key, FirewallSettings.from_host(host).enabled, known)


def outside(home: str, *paths: str) -> list[str]:
    """Those of ``paths`` not under ``home``: a unit's extra ReadWritePaths (models may live on
    a bigger disk)."""
    return [path for path in paths if not path.startswith(home + "/")]


def fixed_address(found: HostAddress, name: str, key: str) -> str:
    """The primary address 'auto' binds without the firewall, or a DeployError saying why not."""
    if not found.address:
        raise DeployError(
            f"{name}: {key} is 'auto' but the host has no IPv4 address with a default "
            f"route or global scope; set {key} to the address clients should use"
        )
    if found.dynamic:
        raise DeployError(
            f"{name}: {key} is 'auto', the host's address {found.address} is leased by DHCP and "
            "the firewall role is off (firewall_enabled False): binding that address breaks at "
            "the next new lease, and binding all addresses would need the firewall. Turn "
            "firewall_enabled on, give the host a static address (guest_vms 'address'), or set "
            f"{key} to an address yourself"
        )
    return found.address


def host_address(target) -> HostAddress:
    """``target``'s primary IPv4 address, read once per host and run (a role's probe may have
    read it already: see listen_address)."""
    cache = host_memo(target, "services")
    if "address" not in cache:
        cache["address"] = target.get_fact(PrimaryAddress)
    return cache["address"]


def resolve_on(value: str, run, filtered: bool, proxied: bool = False) -> str | None:
    """``value`` with 'auto' resolved as listen_address does, running the address probe with
    ``run`` (a function that runs a shell command on the host and returns its output): for
    checks of a host. None where the deploy refuses 'auto'."""
    if value != "auto":
        return value
    if proxied:
        return LOOPBACK
    if filtered:
        return ALL_IPV4
    found = parse_host_address(run(ADDRESS_PROBE).splitlines())
    return None if found.dynamic else found.address


def client_address(listen: str) -> str:
    """Where a client on the host itself reaches a service listening on ``listen``."""
    return "127.0.0.1" if listen in checks.WILDCARD_ADDRESSES else listen


class SecretFileState(FactBase):
    """Owner, group, octal mode and SHA-1 of a file (None if absent), in one round trip."""

    @override
    def command(self, path: str) -> str:
        q = shlex.quote(path)
        return f"test -f {q} && stat -c '%U %G %a' {q} && sha1sum {q} | cut -d' ' -f1 || true"

    @override
    def process(self, output: list[str]):
        if len(output) < 2:
            return None
        user, group, mode = output[0].split()
        return {"user": user, "group": group, "mode": mode, "sha1": output[1].strip()}


@operation()
def secret_file(path: str, content: str, user: str, group: str, mode: str = "600"):
    """Ensure ``path`` holds ``content`` with the given owner and mode.

    Unlike ``files.put`` this never prints the content: ``pyinfra --diff`` shows the changes of
    text files, and this content is a secret. The file is created empty with its final mode
    before the upload writes into it; with sudo, pyinfra uploads to a temporary file first and
    copies it as root, so that file too is created beforehand, mode 0600, by the SSH user.
    """
    state = host.get_fact(SecretFileState, path=path)
    wanted = host_state.sha1(content)
    q = shlex.quote(path)
    if state is None:
        yield StringCommand(f"install -m {mode} -o {user} -g {group} /dev/null {q}")
    if state is None or state["sha1"] != wanted:
        temp = host.get_temp_filename()  # a random name: nobody can plant a file there first
        op_args = host.current_op_global_arguments
        if op_args and op_args.get("_sudo"):
            # noclobber: fail rather than write through anything already at that path.
            yield StringCommand(f"umask 077 && set -C && : > {temp}", _sudo=False)
        yield FileUploadCommand(StringIO(content), path, remote_temp_filename=temp)
    if state is None or (state["user"], state["group"]) != (user, group):
        yield StringCommand(f"chown {user}:{group} {q}")
    if state is None or state["mode"] != mode.lstrip("0"):
        yield StringCommand(f"chmod {mode} {q}")


def kept_secret(state: State, name: str, path: str, content: str, user: str):
    """A 0600 file of ``user`` (owner and group) holding a secret, written only when it
    differs from what the role's HostState read."""
    if state.files.get(path) == FileState("600", f"{user}:{user}", host_state.sha1(content)):
        return UNCHANGED
    return secret_file(name=name, path=path, content=content, user=user, group=user)


@dataclass
class ServiceHost:
    """What a serving role's probe reads about the guest besides its own install."""

    python: tuple[int, int] | None = None  # version of the interpreter its venv is made with
    gpus: int = 0  # NVIDIA GPUs nvidia-smi lists (0 before the driver works)
    user_exists: bool = False
    models: dict[str, str] = field(default_factory=dict)  # complete model folder -> its stamp
    address: HostAddress | None = None  # the guest's primary IPv4 address

    def read(self, lines: list[str]) -> None:
        """Fill the fields from the lines of :func:`service_host_probe`."""
        for line in lines:
            kind, _, value = line.partition(" ")
            value = value.strip()
            if kind == "python" and value:
                major, _, minor = value.partition(".")
                self.python = (int(major), int(minor))
            elif kind == "gpus" and value.isdigit():
                self.gpus = int(value)
            elif kind == "user":
                self.user_exists = value == "yes"
        self.address = parse_host_address(lines)


def service_host_probe(python: str, user: str) -> list[str]:
    """Probe lines for :class:`ServiceHost`: the interpreter's version, the GPU count, whether
    the service user exists, and the guest's primary address."""
    q = shlex.quote
    return [
        f"echo python $({q(python)} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
        " 2>/dev/null)",
        "echo gpus $(nvidia-smi -L 2>/dev/null | grep -c '^GPU')",
        f"getent passwd {q(user)} >/dev/null && echo user yes || echo user no",
        ADDRESS_PROBE,
    ]


def system_user(user: str, home: str, exists: bool) -> None:
    """A system user and its own group for a service, with ``home`` and no login shell."""
    if exists:
        return
    q = shlex.quote
    server.shell(
        name=f"system user {user}",
        commands=[
            f"useradd --system --user-group --home-dir {q(home)} "
            f"--shell /usr/sbin/nologin {q(user)}"
        ],
    )


def private_log(state: State, path: str, user: str) -> None:
    """A log file only ``user`` (and root) can read: a service's output may hold what the
    journal's readers (adm, systemd-journal) must not see."""
    log = state.files.get(path)
    if log is None or (log.mode, log.owner) != ("600", f"{user}:{user}"):
        files.file(
            name="its log file, readable by the service user only",
            path=path,
            user=user,
            group=user,
            mode="600",
        )


class HttpAnswers(FactBase):
    """'up' once ``url`` answers with a 2xx status, 'down' after ``timeout`` seconds of trying."""

    @override
    def command(self, url: str, timeout: int) -> str:
        return (
            f"end=$(( $(date +%s) + {int(timeout)} )); "
            f"until curl -fsS -o /dev/null -m 5 {shlex.quote(url)} 2>/dev/null; do "
            '[ "$(date +%s)" -ge "$end" ] && { echo down; exit 0; }; sleep 2; done; echo up'
        )

    @override
    def process(self, output: list[str]) -> str:
        return output[-1].strip() if output else ""


@operation()
def wait_until_answering(service: str, url: str, timeout: int, logs_command: str):
    """Wait (at most ``timeout`` seconds) until ``url`` answers; if it never does, fail with
    ``logs_command``'s output (the service's last log lines), shown on stderr.

    Changes nothing when the service answers. It waits only when the deploy runs (not while
    pyinfra plans), because the service may be started by an earlier operation of the run.
    ``logs_command`` runs on the host and must redact anything secret itself.
    """
    if not host.state.is_executing:
        return
    if host.get_fact(HttpAnswers, url=url, timeout=timeout) != "down":
        return
    message = shlex.quote(f"{service} did not answer {url} within {timeout} s. Last log lines:")
    yield StringCommand(f"{{ echo {message}; {logs_command}; }} >&2; exit 1")


def redact_keys_sed() -> str:
    """A sed filter for log lines: tabbyAPI logs 'Your API key is: ...' and 'Your admin key
    is: ...' at every start (common/auth.py); bearer tokens are masked too."""
    return (
        "sed -E -e 's/(key is:).*/\\1 <redacted>/I' "
        "-e 's/(bearer|x-api-key:|x-admin-key:)[[:space:]]*[^[:space:]\"]+/\\1 <redacted>/Ig'"
    )


def unit_lifecycle(
    state: State, label: str, unit: str, unit_file, runnable: bool, restart_on=(), reload_on=()
) -> list[OpResult]:
    """Keep a systemd ``unit`` enabled, and running if ``runnable``: reload systemd when its
    unit file op ``unit_file`` changed, then restart (or reload) it only if it was already
    running and an op in ``restart_on`` (``reload_on``) changed; a stopped unit just starts with
    the new state. A unit that is not runnable (its code or image is missing) is only enabled.
    Ops that cannot be needed are not even planned, so a converged host costs no round trip.
    Returns the ops that may (re)start it: a health wait follows only those (host_state.after)."""
    needed = [op for op in (unit_file, *restart_on, *reload_on) if op is not UNCHANGED]
    host_state.after(
        [unit_file], systemd.daemon_reload, name=op_name(label, "reload systemd units")
    )
    if not runnable:
        host_state.service(state, op_name(label, "enabled on boot"), unit, running=None)
        return []
    restart = [unit_file, *restart_on]

    def changed(ops) -> bool:
        return any(op.did_change() for op in ops)

    # A running unit restarts for a change of what it runs, else reloads for its reload_on.
    when = [("restart", lambda: changed(restart))]
    if reload_on:
        when.append(("reload", lambda: not changed(restart) and changed(reload_on)))
    started: list[OpResult] = [
        systemd.service(
            name=op_name(label, f"{verb} for the change"),
            service=unit,
            running=None,
            restarted=verb == "restart",
            reloaded=verb == "reload",
            _if=[condition],
        )
        for verb, condition in (when if needed else [])
    ]
    started.append(host_state.service(state, op_name(label, "running and enabled on boot"), unit))
    return started
