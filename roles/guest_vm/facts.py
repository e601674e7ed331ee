"""The guest_vm role's one fact: everything about the host's VMs, in one round trip."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase
from typing_extensions import override

from roles.libvirt.facts import sections

VIRSH = "virsh -q -c qemu:///system"


def cpu_list(text: str) -> set[int]:
    """CPUs of a kernel CPU list such as ``0-3,8,10-11``."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.update(range(int(low), int(high) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


class GuestVmState(FactBase):
    """The host's CPUs, memory, /dev/kvm, libvirt's domains (all, running, autostarted, UUIDs
    of ``names``), which of ``files`` exist, each disk's virtual size, the sha256 of each file
    in ``sums``, which ``pci`` addresses exist, the hugepages reserved and the size of the
    filesystem ``image_dir`` is on (or will be: its nearest existing parent's)."""

    @override
    def command(self, names, files, disks, sums, pci, image_dir="/") -> str:
        q = lambda items: " ".join(shlex.quote(i) for i in items) or "''"  # noqa: E731
        return "; ".join(
            [
                "echo '[cpus]'; cat /sys/devices/system/cpu/online",
                "echo '[kvm]'; test -e /dev/kvm && echo present",
                "echo '[hugepages]'; cat /proc/sys/vm/nr_hugepages",
                "echo '[mem-kib]'; sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo",
                f"echo '[fs-bytes]'; d={shlex.quote(image_dir)}; "
                'while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
                'df -B1 --output=size "$d" | tail -n 1',
                "if command -v virsh >/dev/null; then "
                f"echo '[all]'; {VIRSH} list --all --name; "
                f"echo '[running]'; {VIRSH} list --state-running --name; "
                f"echo '[autostart]'; {VIRSH} list --all --autostart --name; "
                f"echo '[uuids]'; for n in {q(names)}; do "
                f'echo "$n $({VIRSH} domuuid "$n" 2>/dev/null)"; done; fi',
                f"echo '[files]'; for f in {q(files)}; do "
                "stat -c '%n|%i|%s' \"$f\" 2>/dev/null; done",
                f"echo '[disks]'; for f in {q(disks)}; do test -e \"$f\" && "
                'echo "$f|$(qemu-img info -U "$f" | sed -n \'s/^virtual size: .*(\\([0-9]*\\) '
                "bytes)$/\\1/p')\"; done",
                f"echo '[sums]'; sha256sum {q(sums)} 2>/dev/null",
                f"echo '[pci]'; for a in {q(pci)}; do "
                'test -e "/sys/bus/pci/devices/$a" && echo "$a"; done',
                "true",
            ]
        )

    @staticmethod
    @override
    def default():
        return GuestVmState().process([])

    @override
    def process(self, output):
        found = sections(output)
        words = lambda name: [w for line in found.get(name, []) for w in line.split()]  # noqa: E731

        def table(name: str, cast=str) -> dict:
            rows = {}
            for line in found.get(name, []):
                parts = line.strip().split("|")
                if len(parts) >= 2 and parts[1] != "":
                    rows[parts[0]] = [cast(p) for p in parts[1:]]
            return rows

        uuids = {}
        for line in found.get("uuids", []):
            parts = line.split()
            if len(parts) == 2:
                uuids[parts[0]] = parts[1]
        sums = {}
        for line in found.get("sums", []):
            match = re.match(r"([0-9a-f]{64})\s+\*?(.+)", line.strip())
            if match:
                sums[match.group(2)] = match.group(1)

        def number(name: str, default: int | None = None) -> int | None:
            values = words(name)
            return int(values[0]) if values else default

        mem_kib = number("mem-kib")
        return {
            "cpus": cpu_list(" ".join(found.get("cpus", []))),
            "kvm": "present" in words("kvm"),
            "hugepages": number("hugepages", 0),
            "domains": set(words("all")),
            "running": set(words("running")),
            "autostart": set(words("autostart")),
            "uuids": uuids,
            "files": {
                k: {"inode": int(v[0]), "size": int(v[1])} for k, v in table("files").items()
            },
            "disk_sizes": {k: int(v[0]) for k, v in table("disks").items()},
            "sums": sums,
            "pci": set(words("pci")),
            "mem_mib": mem_kib and mem_kib // 1024,
            "fs_bytes": number("fs-bytes"),
        }
