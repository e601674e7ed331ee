"""Lab machines: systemd-nspawn containers booting the cached root filesystem.

Each machine gets a writable in-memory layer over the shared read-only tree
(`--volatile=overlay`; a persistent kind, hv, its own copy of the tree instead), its own
address on the lab bridge and a few per-machine files bind-mounted from
`<labdir>/machines/<name>/`, where its console log and PIDs are kept too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import TypedDict

from lab import cgroups, cloud_image, hostfs, mirrors, network, proc, ssh, vagrant_box
from lab.config import MACHINES, REPO, Lab

BOOT_TIMEOUT = 120  # seconds to SSH-ready; a boot takes 1-3 s here
STOP_TIMEOUT = 60
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def ip_of(lab: Lab, machine: str, subnet: str) -> str:
    return network.address(subnet, MACHINES[machine].octet)


class MachineState(TypedDict):
    """A machine's state.json: its address and the processes that run it."""

    ip: str
    script: proc.Proc  # `script`, which gives nspawn a terminal
    nspawn: proc.Proc | None  # None until it is found
    leader: proc.Proc | None  # the machine's init


def _state_path(lab: Lab, machine: str) -> Path:
    return lab.machine_dir(machine) / "state.json"


def state(lab: Lab, machine: str) -> MachineState | None:
    try:
        return json.loads(_state_path(lab, machine).read_text())
    except (OSError, ValueError):
        return None


def running(lab: Lab, machine: str) -> MachineState | None:
    """The machine's state if its nspawn process is up, else None."""
    st = state(lab, machine)
    return st if st and proc.alive(st["nspawn"]) else None


def _write_files(lab: Lab, machine: str, ip: str, subnet: str, nameservers: list[str]) -> Path:
    mdir = lab.machine_dir(machine)
    mdir.mkdir(parents=True, exist_ok=True)
    prefix = subnet.split("/")[1]
    (mdir / "hostname").write_text(lab.machine_id(machine) + "\n")
    (mdir / "host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"Address={ip}/{prefix}\nGateway={network.gateway(subnet)}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    (mdir / "resolv.conf").write_text("".join(f"nameserver {s}\n" for s in nameservers))
    environment, apt_proxy = proxy_files()
    (mdir / "environment").write_text(environment)
    (mdir / "apt-proxy.conf").write_text(apt_proxy)
    # Docker's overlay2 cannot sit on the overlay root: give it a directory on the real disk.
    (mdir / "docker").mkdir(exist_ok=True)
    return mdir


def proxy_files() -> tuple[str, str]:
    """The host's proxy, if it uses one, for a machine: (/etc/environment for login shells,
    apt's proxy configuration)."""
    proxies = {k: os.environ[k] for k in PROXY_VARS if os.environ.get(k)}
    environment = "".join(f'{k}="{v}"\n' for k, v in proxies.items())
    apt = ""
    for scheme in ("http", "https"):
        url = proxies.get(f"{scheme}_proxy") or proxies.get(f"{scheme.upper()}_PROXY")
        apt += f'Acquire::{scheme}::Proxy "{url}";\n' if url else ""
    return environment, apt


def _nspawn_command(lab: Lab, machine: str, root: Path, mdir: Path) -> list[str]:
    binds = {
        "hostname": "/etc/hostname",
        "host0.network": "/etc/systemd/network/80-container-host0.network",
        "resolv.conf": "/etc/resolv.conf",
        "environment": "/etc/environment",
        "apt-proxy.conf": "/etc/apt/apt.conf.d/80aicoder-lab-proxy",
    }
    cmd = [
        "systemd-nspawn",
        f"--directory={root}",
        f"--machine={lab.machine_id(machine)}",
        "--register=no",  # no systemd on the host to register with
        "--keep-unit",
        "--boot",
        "--capability=all",  # Docker and libvirt need them
        "--system-call-filter=@keyring bpf",
        f"--network-bridge={lab.bridge}",
        "--resolv-conf=off",
        "--timezone=off",  # the base role sets the machine's own time zone
        "--link-journal=no",
        *[f"--bind-ro={mdir / src}:{dst}" for src, dst in binds.items()],
        f"--bind-ro={lab.root_key}.pub:/root/.ssh/authorized_keys",
        f"--bind={mdir / 'docker'}:/var/lib/docker",
    ]
    kind = MACHINES[machine]
    cmd.append("--volatile=no" if kind.persistent else "--volatile=overlay")
    if kind.group == "ai_guests" and mirrors.folder(lab).is_dir():
        cmd.append(f"--bind-ro={mirrors.folder(lab)}:{mirrors.MOUNT}")
    if kind.guest_images:
        cmd.append(f"--bind-ro={cloud_image.images_dir()}:{cloud_image.MOUNT}")
    if kind.vagrant:
        cmd.append(f"--bind-ro={vagrant_box.ensure()}:{vagrant_box.MOUNT}")
        cmd.append(f"--bind-ro={REPO}")
        prefix = venv_base_prefix()
        if prefix:
            cmd.append(f"--bind-ro={prefix}")
    if kind.lan:
        cmd.append(f"--network-veth-extra={lab.lan_link(machine)}:lan0")
    if Path("/dev/net/tun").exists():  # libvirt's and Docker's networks want it
        cmd.append("--bind=/dev/net/tun")
    return cmd


def venv_base_prefix() -> Path | None:
    """Where the interpreter of the checkout's .venv lives when it is not the system's (pyenv's,
    say): the vagrant machine runs the venv's pyinfra and pytest, so it needs that one too."""
    with contextlib.suppress(OSError):
        for line in (REPO / ".venv" / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and not value.strip().startswith("/usr/"):
                return Path(value.strip()).parent
    return None


def start(
    lab: Lab, machine: str, root: Path, subnet: str, nameservers: list[str], keep: bool = False
) -> MachineState:
    """Boot the machine and wait for SSH; a running machine is kept as it is. With ``keep`` a
    persistent machine boots its root filesystem as the last run left it."""
    kept = running(lab, machine)
    if kept:
        return kept
    if keep:
        power_off(lab, machine)
    else:
        stop(lab, machine)  # clear what a crashed run may have left
    ip = ip_of(lab, machine, subnet)
    mdir = _write_files(lab, machine, ip, subnet, nameservers)
    if MACHINES[machine].persistent:
        own_root = mdir / "root"
        if not own_root.is_dir():
            subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(own_root)], check=True)
            own_root.chmod(0o755)  # the cached tree is 0700; services running as users need /
        root = own_root
    groups = cgroups.create(f"{lab.cgroup}/{machine}")
    log = mdir / "console.log"
    # nspawn wants a terminal for the machine's console: `script` gives it a pseudo-terminal.
    # `script` runs the command through $SHELL: bash execs it, dash forks it (CI has no
    # SHELL set), so pin the shell and look for nspawn among all descendants.
    script = subprocess.Popen(
        ["script", "-qfec", shlex.join(_nspawn_command(lab, machine, root, mdir)), str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the caller must not reach the machine
        preexec_fn=lambda: cgroups.join(groups),
        env={**os.environ, "SHELL": "/bin/sh"},
    )
    st: MachineState = {"ip": ip, "script": proc.ident(script.pid), "nspawn": None, "leader": None}
    # Recorded at once: should anything below fail, `down` still finds what to stop.
    _state_path(lab, machine).write_text(json.dumps(st))
    nspawn = st["nspawn"] = _find_child(script.pid, "systemd-nspawn", log)
    _state_path(lab, machine).write_text(json.dumps(st))
    if MACHINES[machine].lan:
        network.attach_lan(lab, lab.lan_link(machine))
    try:
        ssh.wait_ready(lab, ip, BOOT_TIMEOUT, alive=lambda: proc.alive(nspawn))
    except Exception as e:
        raise RuntimeError(f"{machine}: {e}; console log:\n{tail(log)}") from e
    # The container's init, for a last-resort kill of the whole machine at `down`.
    leader = _find_child(nspawn["pid"], "systemd", log)
    st["leader"] = leader
    _state_path(lab, machine).write_text(json.dumps(st))
    return st


def _find_child(pid: int, comm: str, log: Path, timeout: float = 15) -> proc.Proc:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _descendant(pid, comm)
        if found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"no {comm} process under PID {pid}; console log:\n{tail(log)}")


def _descendant(pid: int, comm: str) -> proc.Proc | None:
    """The first process named ``comm`` below ``pid``, nearest first."""
    for kid in proc.descendants(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{kid}/comm").read_text().strip() == comm:
                return proc.ident(kid)
    return None


def tail(log: Path | str, lines: int = 30) -> str:
    """The last ``lines`` of a console log, for error messages."""
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(lab: Lab, machine: str) -> None:
    """Power the machine off and remove everything `start` made for it; idempotent."""
    power_off(lab, machine)
    hostfs.remove_tree(lab.machine_dir(machine))


def power_off(lab: Lab, machine: str) -> None:
    """Power the machine off (its files, and a persistent machine's root, stay); idempotent."""
    st: MachineState | dict = state(lab, machine) or {}  # {}: nothing recorded
    nspawn = st.get("nspawn")
    if not nspawn and proc.alive(st.get("script")):  # `start` failed before it found nspawn
        nspawn = _descendant(st["script"]["pid"], "systemd-nspawn")
        st["leader"] = nspawn and _descendant(nspawn["pid"], "systemd")
    if proc.alive(nspawn):
        with contextlib.suppress(subprocess.TimeoutExpired):  # a hung machine: SIGTERM below
            ssh.run(lab, st["ip"], "systemctl --no-block poweroff", check=False, timeout=20)
        if not proc.wait_gone(nspawn, STOP_TIMEOUT):
            proc.kill(nspawn, signal.SIGTERM)  # nspawn asks the machine's init to power off
            if not proc.wait_gone(nspawn, 30):
                # Last resort: killing init ends the machine's whole PID namespace.
                proc.kill(st.get("leader"), signal.SIGKILL)
                proc.kill(nspawn, signal.SIGKILL)
                proc.wait_gone(nspawn, 10)
    leader = st.get("leader")
    if proc.alive(leader):  # nspawn was killed from outside and left the machine running
        proc.kill(leader, signal.SIGKILL)
        proc.wait_gone(leader, 10)
    script = st.get("script")
    if script and not proc.wait_gone(script, 10):
        proc.kill(script, signal.SIGKILL)
    busy = cgroups.remove(f"{lab.cgroup}/{machine}")
    if busy:
        raise RuntimeError(f"{machine}: cgroups still in use after stop: {busy}")
