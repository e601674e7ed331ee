"""Debian cloud images built here, standing in for the official ones the lab cannot download.

One per release the lab's VMs use (Debian 12 by default; `guest_vm_vms[].release`). Like
`debian-12-generic-amd64.qcow2`: one qcow2 disk with a GPT, an EFI system partition and an
ext4 root, cloud-init and openssh-server, booting through OVMF. Built from the lab's root
filesystem recipe plus a kernel, GRUB (a standalone EFI binary, so no first boot is needed to
install it) and cloud-init; cached by recipe hash in `<cache>/images/` with a SHA512SUMS file
listing every image there, as the Debian mirrors publish it. The hv machine sees that folder
read-only at `MOUNT`.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from lab import config, rootfs
from roles.common.platform import DEFAULT_GUEST, RELEASES, Release

MOUNT = "/srv/aicoder-lab-images"  # where the hv machine sees the images folder
PACKAGES = [
    *rootfs.PACKAGES,
    "linux-image-amd64",
    "grub-efi-amd64",
    "cloud-init",
    "cloud-guest-utils",  # growpart: the root partition grows with the disk
    "ifupdown",  # cloud-init's network renderer (as in Debian 12's official images)
    "isc-dhcp-client",
    "locales",  # cloud-init sets en_US.UTF-8 by default; without it its status is "error"
]
ESP_MIB, ROOT_MIB = 64, 3072
TOOLS = ["mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "mmd", "sfdisk", "qemu-img"]


def images_dir() -> Path:
    return config.cache_dir() / "images"


def release_of(suite: str) -> Release:
    return next(r for r in RELEASES.values() if r.codename == suite)


def image_name(suite: str) -> str:
    return release_of(suite).lab_cloud_image


def recipe(suite: str = rootfs.SUITE) -> dict:
    return {
        "suite": suite,
        "mirror": config.mirror(),
        "security_mirror": config.security_mirror(),
        "packages": PACKAGES,
        "esp_mib": ESP_MIB,
        "root_mib": ROOT_MIB,
        "grub_cfg": _grub_cfg("UUID"),
        "version": 1,
    }


def _grub_cfg(root_uuid: str) -> str:
    # Debian keeps /vmlinuz and /initrd.img pointing at the newest kernel.
    return (
        "insmod part_gpt\ninsmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"linux /vmlinuz root=UUID={root_uuid} ro console=tty0 console=ttyS0,115200n8\n"
        "initrd /initrd.img\nboot\n"
    )


def suites_for(vms: list[dict]) -> list[str]:
    """The suites of the releases these guest_vm_vms entries run."""
    keys = {vm.get("release", DEFAULT_GUEST.key) for vm in vms}
    return sorted(RELEASES[k].codename for k in keys)


def ensure(log=print, suite: str = rootfs.SUITE) -> Path:
    """The cached image of ``suite`` for the current recipe (built first if missing); its
    folder also holds SHA512SUMS."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        raise SystemExit(
            f"building the lab's cloud image needs {', '.join(missing)} "
            "(Debian: mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-utils)"
        )
    r = recipe(suite)
    digest = rootfs.recipe_hash(r)
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / image_name(suite)
    # The default suite's stamp keeps the name it always had.
    stamp = folder / ("recipe" if suite == rootfs.SUITE else f"recipe-{suite}")
    if stamp.exists() and stamp.read_text().strip() == digest and image.exists():
        return image
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == digest and image.exists():
            return image
        log(f"building the lab's {release_of(suite).name} cloud image {image} (a few minutes) ...")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="aicoder-cloud-image-", dir=folder) as tmp:
            _build(r, digest, Path(tmp), image.name)
            (Path(tmp) / image.name).replace(image)
        sha512 = hashlib.sha512()
        with open(image, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha512.update(block)
        _list_sum(folder / "SHA512SUMS", image.name, sha512.hexdigest())
        stamp.write_text(digest + "\n")
        log(f"cloud image built in {time.monotonic() - started:.0f} s")
    return image


def _list_sum(sums: Path, name: str, digest: str) -> None:
    """``name``'s line in SHA512SUMS, beside the other images' lines."""
    lines = sums.read_text().splitlines() if sums.exists() else []
    kept = [line for line in lines if line.split()[-1:] != [name]]
    sums.write_text("".join(f"{line}\n" for line in [*kept, f"{digest}  {name}"]))


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _build(r: dict, digest: str, tmp: Path, name: str) -> None:
    root_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"aicoder-lab-cloud-image/{digest}"))
    tree = tmp / "root"
    (tmp / "grub.cfg").write_text(_grub_cfg(root_uuid))
    (tmp / "fstab").write_text(f"UUID={root_uuid} / ext4 defaults,discard,errors=remount-ro 0 1\n")
    hooks = [
        f"copy-in {tmp / 'grub.cfg'} /tmp/",
        f"copy-in {tmp / 'fstab'} /etc/",
        'chroot "$1" grub-mkstandalone -O x86_64-efi -o /boot/BOOTX64.EFI '
        '--modules="part_gpt ext2 fat" "boot/grub/grub.cfg=/tmp/grub.cfg"',
        # Each VM makes its own identity at first boot: machine id, SSH host keys, hostname.
        'rm -f "$1"/etc/ssh/ssh_host_* "$1/etc/hostname" "$1/tmp/grub.cfg"',
        'truncate -s 0 "$1/etc/machine-id"',
        "sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' \"$1/etc/locale.gen\"",
        'chroot "$1" locale-gen',
        'systemctl --root="$1" enable ssh.service',
    ]
    components = rootfs.COMPONENTS
    sources = [
        f"deb {r['mirror']} {r['suite']} {components}",
        f"deb {r['mirror']} {r['suite']}-updates {components}",
        f"deb {r['security_mirror']} {r['suite']}-security {components}",
    ]
    _run(
        "mmdebstrap", "--variant=apt", "--quiet", f"--include={','.join(r['packages'])}",
        *[f"--customize-hook={h}" for h in hooks], r["suite"], str(tree), *sources,
    )  # fmt: skip
    esp, root, disk = tmp / "esp.img", tmp / "root.img", tmp / "disk.raw"
    _run("mkfs.vfat", "-F", "32", "-n", "ESP", "-C", str(esp), str(ESP_MIB * 1024))
    _run("mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT")
    # The removable-media path: OVMF boots it without any NVRAM entry.
    _run("mcopy", "-i", str(esp), str(tree / "boot/BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI")
    _run("mke2fs", "-q", "-t", "ext4", "-U", root_uuid, "-L", "root", "-d", str(tree),
         "-F", str(root), f"{ROOT_MIB}M")  # fmt: skip
    shutil.rmtree(tree)
    with open(disk, "wb") as f:
        f.truncate((1 + ESP_MIB + ROOT_MIB + 1) * 1024 * 1024)
    layout = (
        "label: gpt\n"
        f"start=1MiB, size={ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
        f"start={1 + ESP_MIB}MiB, size={ROOT_MIB}MiB, "
        "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout, text=True, check=True)
    for image, offset in ((esp, 1), (root, 1 + ESP_MIB)):
        _run("dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={offset}",
             "conv=notrunc,sparse", "status=none")  # fmt: skip
        image.unlink()
    _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(disk), str(tmp / name))
