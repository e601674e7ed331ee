"""Command line: python -m lab up|status|ssh|down|inventory."""

from __future__ import annotations

import argparse
import os
import sys

from lab import instance, nspawn, ssh, vm
from lab.config import DEFAULT_MACHINES, MACHINES, Lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="Local lab of Debian 12 machines (systemd-nspawn) to deploy to. "
        "Instance: AICODER_LAB_NAME (default lab), state: AICODER_LAB_DIR (default <repo>/.lab).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="boot the machines (running ones are kept)")
    p_up.add_argument(
        "--machines",
        default=",".join(DEFAULT_MACHINES),
        help=f"comma-separated, of {', '.join([*MACHINES, *vm.MACHINES])} (default: %(default)s)",
    )
    sub.add_parser("status", help="show the lab's network and machines")
    p_ssh = sub.add_parser("ssh", help="ssh into a machine as root")
    p_ssh.add_argument("name", choices=sorted([*MACHINES, *vm.MACHINES]))
    p_ssh.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (default: a shell)")
    p_restart = sub.add_parser("restart", help="power a machine off and boot it again")
    p_restart.add_argument("name", choices=sorted(MACHINES))
    sub.add_parser("down", help="stop every machine and restore the host network")
    sub.add_parser("inventory", help="print the generated pyinfra inventory's path")
    args = parser.parse_args(argv)
    lab = Lab.from_env()

    if args.command == "up":
        machines = [m for m in args.machines.split(",") if m]
        vms = [m for m in machines if m in vm.MACHINES]  # qemu VMs (lab/vm.py)
        if len(vms) < len(machines) or not machines:
            instance.up(lab, [m for m in machines if m not in vm.MACHINES])
        if vms:
            vm.up(lab)
        print(f"inventory: {lab.inventory}")
        print(f"deploy:    pyinfra -y {lab.inventory} deploy.py")
        print("ssh:       python -m lab ssh NAME    tear down: python -m lab down")
    elif args.command == "status":
        print("\n".join(instance.status(lab) + vm.status(lab)))
    elif args.command == "ssh" and args.name in vm.MACHINES:
        vm_state = vm.running(lab, args.name)
        if not vm_state:
            print(f"{args.name} is not running (python -m lab up --machines {args.name})")
            return 1
        os.execvp("ssh", vm.ssh_command(lab, vm_state, *args.cmd))
    elif args.command == "ssh":
        st = nspawn.running(lab, args.name)
        if not st:
            print(f"{args.name} is not running (python -m lab up --machines {args.name})")
            return 1
        tty = not args.cmd and sys.stdin.isatty()
        cmd = ssh.command(lab, st["ip"], *args.cmd, tty=tty)
        os.execvp(cmd[0], cmd)
    elif args.command == "restart":
        instance.restart(lab, args.name)
    elif args.command == "down":
        vm.down(lab)
        instance.down(lab)
    elif args.command == "inventory":
        if not lab.inventory.exists():
            print(f"no inventory: the lab {lab.name!r} is not up", file=sys.stderr)
            return 1
        print(lab.inventory)
    return 0
