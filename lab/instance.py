"""A lab instance as a whole: up, status, down."""

from __future__ import annotations

import json
import os
import time

from lab import (
    admin,
    cgroups,
    cloud_image,
    inventory,
    mirrors,
    network,
    nspawn,
    rootfs,
    ssh,
    vagrant_box,
)
from lab.config import MACHINES, Lab
from lab.overrides import OVERRIDES, SEED_COMMANDS


def _load(lab: Lab) -> dict:
    try:
        return json.loads(lab.state_file.read_text())
    except (OSError, ValueError):
        return {}


def machines_with_state(lab: Lab) -> list[str]:
    """Machines that have a directory in the lab (running, or left by a crash)."""
    root = lab.dir / "machines"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def up(lab: Lab, machines: list[str], log=print) -> dict[str, str]:
    """Bring the lab up with `machines` running (others already running are kept).

    Returns machine name -> address of every running machine.
    """
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root (network, cgroups, systemd-nspawn)")
    unknown = sorted(set(machines) - set(MACHINES))
    if unknown:
        raise SystemExit(f"unknown machine(s) {unknown}; the lab knows {sorted(MACHINES)}")
    ssh.ensure_key(lab)
    saved = _load(lab)
    subnet = saved.get("subnet") or network.pick_subnet(lab.name)
    lab.state_file.write_text(json.dumps({"name": lab.name, "subnet": subnet}))
    nameservers = network.up(lab, subnet)
    wanted = sorted(set(machines) | {m for m in machines_with_state(lab) if nspawn.running(lab, m)})
    if any(MACHINES[m].guest_images for m in wanted):
        for suite in cloud_image.suites_for(OVERRIDES["hypervisors"].get("guest_vm_vms", [])):
            cloud_image.ensure(log, suite)
    if any(MACHINES[m].vagrant for m in wanted):
        vagrant_box.ensure(log)
    if any(MACHINES[m].group == "ai_guests" for m in wanted) and mirrors.ensure(lab):
        log(f"tabbyAPI: served from {mirrors.tabbyapi_bundle()}")
    ips = {}
    for machine in wanted:
        started = time.monotonic()
        was_running = nspawn.running(lab, machine)
        root = rootfs.ensure(log, MACHINES[machine].suite)
        st = nspawn.start(lab, machine, root, subnet, nameservers)
        ips[machine] = st["ip"]
        if not was_running:
            admin.provision(lab, st["ip"])  # what cloud-init does on a real VM's first boot
            seed(lab, machine, st["ip"])
        how = "running" if was_running else f"up in {time.monotonic() - started:.1f} s"
        log(f"{lab.machine_id(machine)}: {st['ip']} ({how})")
    inventory.write(lab, ips)
    return ips


def seed(lab: Lab, machine: str, ip: str) -> None:
    """Run the machine's SEED_COMMANDS (lab/overrides.py) once on its first boot: state a
    user's host already has before the first deploy, which the deploy must keep."""
    marker = "/var/lib/aicoder-lab-seeded"
    commands = SEED_COMMANDS.get(machine, [])
    if commands:
        script = " && ".join([*commands, f"touch {marker}"])
        ssh.run(lab, ip, f"test -e {marker} || ({script})")


def restart(lab: Lab, machine: str, log=print) -> str:
    """Power a running machine off and boot it again, as a reboot of a real host would (a
    persistent machine keeps its disk); returns its address."""
    if not nspawn.running(lab, machine):
        raise SystemExit(f"{machine} is not running (python -m lab up --machines {machine})")
    started = time.monotonic()
    nspawn.power_off(lab, machine)
    subnet = _load(lab)["subnet"]
    root = rootfs.ensure(log, MACHINES[machine].suite)
    st = nspawn.start(lab, machine, root, subnet, network.up(lab, subnet), keep=True)
    admin.provision(lab, st["ip"])  # a volatile machine boots without it
    log(f"{lab.machine_id(machine)}: restarted in {time.monotonic() - started:.1f} s")
    return st["ip"]


def status(lab: Lab) -> list[str]:
    saved = _load(lab)
    lines = [
        f"lab {lab.name!r} in {lab.dir}",
        f"  network: bridge {lab.bridge} "
        f"{'up' if network.link_exists(lab.bridge) else 'absent'}, subnet {saved.get('subnet')}",
    ]
    for machine in machines_with_state(lab):
        st = nspawn.running(lab, machine)
        if not st:
            lines.append(f"  {machine}: stopped (leftovers: run `python -m lab down`)")
            continue
        ok = ssh.run(lab, st["ip"], "true", check=False, timeout=10).returncode == 0
        pid = st["nspawn"]["pid"] if st["nspawn"] else "?"
        lines.append(
            f"  {machine}: running, {st['ip']}, nspawn PID {pid}, "
            f"ssh {'ok' if ok else 'NOT answering'}"
        )
    if lab.inventory.exists():
        lines.append(f"  inventory: {lab.inventory}")
    return lines


def down(lab: Lab, log=print) -> None:
    """Stop every machine and restore the host network; idempotent. The key pair is kept."""
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root (network, cgroups, systemd-nspawn)")
    for machine in machines_with_state(lab):
        started = time.monotonic()
        nspawn.stop(lab, machine)
        log(f"{lab.machine_id(machine)}: stopped in {time.monotonic() - started:.1f} s")
    # Also the groups of machines whose state is gone (a run that crashed or lost its files).
    busy = cgroups.remove(lab.cgroup)
    if busy:
        log(f"cgroups still in use, left in place: {', '.join(busy)}")
    network.down(lab)
    lab.inventory.unlink(missing_ok=True)
    lab.state_file.unlink(missing_ok=True)
