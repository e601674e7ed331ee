"""The lab's Debian root filesystems (12 by default, 13 for the machines that ask for it): built
once per suite with mmdebstrap, cached by recipe hash.

Every machine boots the same read-only tree with `--volatile=overlay`, so the tree is built only
when the recipe (suites, packages, baked files, the host's CA certificates) changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from lab import config, hostfs

SUITE = "bookworm"  # the default; a machine kind may ask for another (lab/config.py)
COMPONENTS = "main contrib non-free non-free-firmware"
PACKAGES = [
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "kmod",
    "tzdata",  # Debian's cloud images have it; the base role links /etc/localtime into it
]
CA_DIR = Path("/usr/local/share/ca-certificates")

# Inside a machine the cgroup v1 controllers are mounted read-only; Docker needs them writable
# to apply limits. `remount,bind,rw` works where a plain `remount,rw` says busy (LAB-FACTS.md).
CGROUP_UNIT = """\
[Unit]
Description=Make the cgroup v1 hierarchies writable for Docker (aicoder lab)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target containerd.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d" || true; done'

[Install]
WantedBy=sysinit.target
"""

# Files baked into the tree (path -> content). Per-machine files (hostname, address, key) are
# bind-mounted at boot instead, see lab.nspawn.
FILES = {
    "etc/systemd/system/aicoder-lab-cgroups.service": CGROUP_UNIT,
    # Root's key comes from a per-lab bind mount; sshd's StrictModes wants the directory 0700.
    "root/.ssh/.keep": "",
}
ENABLE = ["systemd-networkd.service", "ssh.service", "aicoder-lab-cgroups.service"]
# Background apt runs would hold the dpkg lock while a deploy installs packages.
MASK = ["apt-daily.timer", "apt-daily-upgrade.timer"]


def recipe(suite: str = SUITE) -> dict:
    """Everything that decides the tree's content; its hash names the cached tree."""
    certs = {p.name: p.read_bytes().decode() for p in sorted(CA_DIR.glob("*.crt"))}
    return {
        "suite": suite,
        "mirror": config.mirror(),
        "security_mirror": config.security_mirror(),
        "components": COMPONENTS,
        "packages": PACKAGES,
        "files": FILES,
        "enable": ENABLE,
        "mask": MASK,
        "ca_certs": certs,
    }


def recipe_hash(r: dict) -> str:
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]


def ensure(log=print, suite: str = SUITE) -> Path:
    """Return the cached tree of ``suite`` for the current recipe, building it first if
    missing."""
    r = recipe(suite)
    return cached_build(
        prefix(suite), recipe_hash(r), lambda tmp: _build(r, tmp), Path.is_dir, _in_use,
        f"the lab root filesystem of {suite} (about a minute)", log,
    )  # fmt: skip


def prefix(suite: str) -> str:
    """The cache name of a suite's trees: the default suite's keeps the name it always had."""
    return "rootfs" if suite == SUITE else f"rootfs-{suite}"


def cached_build(prefix: str, digest: str, build, ready, in_use, what: str, log=print) -> Path:
    """``<cache>/<prefix>-<digest>``, made by ``build(tmp)`` unless ``ready(final)`` already.
    One builder at a time (two labs may start together: the loser finds it ready); a build is
    renamed into place only when complete, and older digests go unless ``in_use``."""
    cache = config.cache_dir()
    final = cache / f"{prefix}-{digest}"
    if ready(final):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready(final):
            return final
        for stale in cache.glob(f"tmp-{prefix}-*"):  # left by an interrupted build
            hostfs.remove_tree(stale)
        tmp = cache / f"tmp-{prefix}-{digest}-{os.getpid()}"
        log(f"building {what}: {final} ...")
        started = time.monotonic()
        try:
            build(tmp)
        except BaseException:
            hostfs.remove_tree(tmp)
            raise
        os.rename(tmp, final)  # atomic: a half-built one never has the final name
        log(f"built in {time.monotonic() - started:.0f} s: {final}")
        for old in cache.glob(f"{prefix}-*"):  # older digests, not another prefix's trees
            digest_only = re.fullmatch(r"[0-9a-f]{12}", old.name[len(prefix) + 1 :])
            if digest_only and old != final and not in_use(old):
                hostfs.remove_tree(old)
    return final


def _in_use(tree: Path) -> bool:
    """Whether a running systemd-nspawn boots `tree` (any lab instance, any user)."""
    needle = f"--directory={tree}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes().split(b"\0"):
                return True
        except OSError:
            pass
    return False


def _build(r: dict, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="aicoder-lab-files-") as staging:
        for rel, content in r["files"].items():
            path = Path(staging, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        Path(staging, "root/.ssh").chmod(0o700)
        Path(staging, "root").chmod(0o700)
        certs = [str(p) for p in sorted(CA_DIR.glob("*.crt"))]
        suite = r["suite"]
        sources = [
            f"deb {r['mirror']} {suite} {COMPONENTS}",
            f"deb {r['mirror']} {suite}-updates {COMPONENTS}",
            f"deb {r['security_mirror']} {suite}-security {COMPONENTS}",
        ]
        hooks = [
            f"sync-in {staging} /",
            'rm -f "$1/root/.ssh/.keep"',
            f'systemctl --root="$1" enable {" ".join(r["enable"])}',
            f'systemctl --root="$1" mask {" ".join(r["mask"])}',
        ]
        if certs:
            hooks += [
                f"copy-in {' '.join(certs)} /usr/local/share/ca-certificates/",
                'chroot "$1" update-ca-certificates',
            ]
        cmd = [
            "mmdebstrap",
            "--variant=apt",
            "--quiet",
            f"--include={','.join(r['packages'])}",
            *[f"--customize-hook={h}" for h in hooks],
            suite,
            str(target),
            *sources,
        ]
        try:
            subprocess.run(cmd, check=True)
        except BaseException:
            hostfs.remove_tree(target)
            raise
