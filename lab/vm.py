"""Lab VM machines: Debian 12 under qemu TCG, for roles that work on the kernel (VFIO).

The machine `vfiohost` boots through OVMF and GRUB from its own disks (an ESP and a root disk),
on a q35 machine with an emulated Intel IOMMU. Beside the primary display adapter (the boot VGA)
it has a stand-in GPU: an ATI VGA-class adapter with an HD audio controller at function 1 of the
same slot, which the guest kernel puts alone in one IOMMU group, like a real GPU and its HDMI
audio. It is reached over SSH on 127.0.0.1 through a qemu host forward.

TCG, not KVM: /dev/kvm on this kind of machine hangs stock kernels (LAB-FACTS.md). The disk
images are built once (the lab's root filesystem recipe plus a kernel and GRUB, installed by a
first boot inside the VM) and cached by recipe hash; each running VM writes to its own overlays.
Everything it makes lives in `<labdir>/vms/<name>/`, apart from the nspawn machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TypedDict

from lab import admin, config, hostfs, inventory, proc, rootfs, ssh
from lab.config import Lab
from lab.nspawn import proxy_files, tail
from lab.overrides import OVERRIDES

NAME = "vfiohost"
GROUP = "hypervisors"

# The stand-in GPU: its slot on the root bus, as the guest's lspci shows it.
STANDIN_SLOT = 5
STANDIN = f"0000:00:{STANDIN_SLOT:02x}.0"
STANDIN_AUDIO = f"0000:00:{STANDIN_SLOT:02x}.1"
PRIMARY_VGA = "0000:00:01.0"  # q35 puts `-vga std` at 00:01.0; it is the boot VGA
# Host data of the VM in the lab inventory: the stand-in is the GPU to pass through; only the
# GPU isolation runs (libvirt and a guest VM, nested under TCG, would take far too long here);
# the deploy may not reboot it unless a test says so.
HOST_DATA = {"vfio_gpus": [STANDIN], "vfio_only": True, "vfio_reboot": False}

PACKAGES = ["linux-image-amd64", "grub-efi-amd64", "pciutils"]
ROOT_SIZE = "4G"
ESP_KIB = 65536
MEMORY = "2048"
CPUS = "2"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BUILD_TIMEOUT = 900  # the first boot installs GRUB, then powers off
BOOT_TIMEOUT = 420  # to SSH; a cold boot takes about 30 s, a warm one with the IOMMU ~150 s
STOP_TIMEOUT = 90
FW_CFG = "opt/aicoder-lab"  # per-VM files handed to the guest through qemu's fw_cfg

# A short menu wait: every second counts twice over on a TCG reboot. Kernel messages go to the
# serial console, which the host keeps in console.log.
GRUB_DEFAULTS = """\
# aicoder lab VM (lab/vm.py): boot at once, console on the serial port.
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_RECORDFAIL_TIMEOUT=0
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200"
"""

# grub-install into the ESP's removable-media path, so OVMF boots it with empty NVRAM too.
GRUB_INSTALL = "--target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram"
FIRSTBOOT_UNIT = f"""\
[Unit]
Description=Install GRUB on the ESP, then power off (aicoder lab VM image build)
ConditionPathExists=!/boot/efi/EFI/BOOT/BOOTX64.EFI
After=local-fs.target
RequiresMountsFor=/boot/efi

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/usr/sbin/grub-install {GRUB_INSTALL}
ExecStart=/usr/sbin/update-grub
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""

# Per-VM files (the lab's SSH key, hostname, proxy) come in through fw_cfg, so one cached
# image serves every lab instance.
FWCFG_UNIT = f"""\
[Unit]
Description=Take the lab's SSH key, hostname and proxy from qemu fw_cfg (aicoder lab VM)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service systemd-networkd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec '\\
  modprobe qemu_fw_cfg; d=/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG}; \\
  install -d -m 700 /root/.ssh; \\
  install -m 600 $d/authorized_keys/raw /root/.ssh/authorized_keys; \\
  hostname "$(cat $d/hostname/raw)"; cat $d/hostname/raw > /etc/hostname; \\
  cat $d/environment/raw > /etc/environment; \\
  cat $d/apt-proxy/raw > /etc/apt/apt.conf.d/80aicoder-lab-proxy'

[Install]
WantedBy=sysinit.target
"""

FILES = {
    "etc/fstab": "LABEL=labroot / ext4 errors=remount-ro 0 1\n"
    "LABEL=LABESP /boot/efi vfat umask=0077 0 2\n",
    "boot/efi/.keep": "",
    "etc/systemd/network/20-lab-wired.network": "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n",
    # qemu's user network answers DNS on 10.0.2.3 (no systemd-resolved in the image).
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
    "etc/default/grub.d/00-aicoder-lab.cfg": GRUB_DEFAULTS,
    # Only the modules this machine needs in its initramfs: a rebuild with Debian's default
    # (MODULES=most) takes many minutes under TCG. The deploy's modules list still goes in.
    "etc/initramfs-tools/conf.d/aicoder-lab.conf": "MODULES=dep\n",
    "etc/systemd/system/aicoder-lab-firstboot.service": FIRSTBOOT_UNIT,
    "etc/systemd/system/aicoder-lab-fwcfg.service": FWCFG_UNIT,
}
ENABLE = ["aicoder-lab-firstboot.service", "aicoder-lab-fwcfg.service"]


def recipe() -> dict:
    """The lab's root filesystem recipe (without the nspawn-only cgroup unit), plus a kernel,
    GRUB and the VM's files; its hash names the cached disk images."""
    r = rootfs.recipe()
    cgroup_files = [k for k, v in r["files"].items() if v == rootfs.CGROUP_UNIT]
    r["files"] = {k: v for k, v in r["files"].items() if k not in cgroup_files} | FILES
    r["enable"] = [u for u in r["enable"] if not any(u in f for f in cgroup_files)] + ENABLE
    r["packages"] = r["packages"] + PACKAGES
    r["disk"] = {"root": ROOT_SIZE, "esp_kib": ESP_KIB}
    return r


def ensure_image(log=print) -> Path:
    """The cached disk images (root.img, esp.img) for the current recipe, built if missing."""
    r = recipe()

    def build(tmp: Path) -> None:
        tmp.mkdir()
        _build_images(r, tmp, log)

    return rootfs.cached_build(
        "vmdisk", rootfs.recipe_hash(r), build, lambda final: (final / "root.img").exists(),
        _open_by_a_process, "the lab VM disk images (a few minutes)", log,
    )  # fmt: skip


def _open_by_a_process(folder: Path) -> bool:
    """Whether a process (a qemu reading its overlay's backing file) has a file in `folder`."""
    prefix = f"{folder}/"
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd).startswith(prefix):
                return True
        except OSError:
            pass
    return False


def _build_images(r: dict, out: Path, log) -> None:
    tree = out / "tree"
    rootfs._build(r, tree)  # the lab's mmdebstrap recipe, with this recipe's packages and files
    kernel = out / "vmlinuz"
    initrd = out / "initrd.img"
    shutil.copy(sorted(tree.glob("boot/vmlinuz-*"))[-1], kernel)
    shutil.copy(sorted(tree.glob("boot/initrd.img-*"))[-1], initrd)
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "labroot", "-d", str(tree), "-F",
         str(out / "root.img"), r["disk"]["root"]],
        check=True,
    )  # fmt: skip
    hostfs.remove_tree(tree)
    subprocess.run(
        ["mkfs.vfat", "-F", "32", "-n", "LABESP", "-C", str(out / "esp.img"),
         str(r["disk"]["esp_kib"])],
        check=True, capture_output=True,
    )  # fmt: skip
    # First boot, straight into the kernel: the image's firstboot unit installs GRUB on the ESP
    # (grub-install --removable --no-nvram, then update-grub) and powers the VM off.
    log("first boot of the VM image: installing GRUB ...")
    cmd = [
        *_qemu_base(),
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=LABEL=labroot rw console=ttyS0,115200",
        "-drive", f"file={out / 'root.img'},if=virtio,format=raw",
        "-drive", f"file={out / 'esp.img'},if=virtio,format=raw",
        "-nic", "none",
        "-serial", f"file:{out / 'build-console.log'}",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    check = subprocess.run(
        ["mdir", "-i", str(out / "esp.img"), "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True
    )
    if check.returncode != 0:
        raise RuntimeError(
            f"GRUB was not installed on the VM's ESP; console log:\n"
            f"{tail(out / 'build-console.log', 40)}"
        )
    for leftover in (kernel, initrd):
        leftover.unlink()


def _qemu_base() -> list[str]:
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-m", MEMORY, "-smp", CPUS,
        "-display", "none", "-monitor", "none",
        "-no-user-config", "-nodefaults",
    ]  # fmt: skip


def qemu_command(vdir: Path, port: int) -> list[str]:
    """The VM: q35 with an emulated Intel IOMMU (interrupt remapping needs the split irqchip),
    OVMF, the primary std VGA at 00:01.0 and the stand-in GPU (VGA + audio) at slot 5."""
    slot = f"0x{STANDIN_SLOT:x}"
    return [
        *_qemu_base(),
        "-name", NAME,
        "-machine", "q35,kernel-irqchip=split",
        "-cpu", "max",
        # The IOMMU must come before the devices it translates for.
        "-device", "intel-iommu,intremap=on",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vdir / 'vars.fd'}",
        # The ESP first: OVMF tries the disks in order, and the root disk has no boot loader.
        "-drive", f"file={vdir / 'esp.qcow2'},if=virtio,format=qcow2",
        "-drive", f"file={vdir / 'root.qcow2'},if=virtio,format=qcow2",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-vga", "std",
        "-device", f"ati-vga,bus=pcie.0,addr={slot}.0,multifunction=on",
        "-device", f"ich9-intel-hda,bus=pcie.0,addr={slot}.1",
        "-fw_cfg", f"name={FW_CFG}/authorized_keys,file={vdir / 'authorized_keys'}",
        "-fw_cfg", f"name={FW_CFG}/hostname,file={vdir / 'hostname'}",
        "-fw_cfg", f"name={FW_CFG}/environment,file={vdir / 'environment'}",
        "-fw_cfg", f"name={FW_CFG}/apt-proxy,file={vdir / 'apt-proxy'}",
        "-serial", f"file:{vdir / 'console.log'}",
        "-pidfile", str(vdir / "qemu.pid"),
    ]  # fmt: skip


def vm_dir(lab: Lab, name: str = NAME) -> Path:
    return lab.dir / "vms" / name


class VmState(TypedDict):
    """A VM's state.json: its qemu process, SSH port forward, console log and image folder."""

    qemu: proc.Proc
    port: int
    log: str
    images: str


def state(lab: Lab, name: str = NAME) -> VmState | None:
    try:
        return json.loads((vm_dir(lab, name) / "state.json").read_text())
    except (OSError, ValueError):
        return None


def running(lab: Lab, name: str = NAME) -> VmState | None:
    """The VM's state (qemu process, SSH port) if its qemu process is up, else None."""
    st = state(lab, name)
    return st if st and proc.alive(st["qemu"]) else None


def host_id(lab: Lab, name: str = NAME) -> str:
    """Inventory name and hostname of the VM, unique across lab instances."""
    return config.short(f"{lab.name}-{name}", 63)


def ssh_command(lab: Lab, st: VmState, *cmd: str) -> list[str]:
    """``ssh`` into the VM through its port forward on 127.0.0.1."""
    return ssh.command(lab, "127.0.0.1", *cmd, port=st["port"])


def wait_ssh(lab: Lab, st: VmState, timeout: float = BOOT_TIMEOUT) -> float:
    """Wait until SSH answers; returns the seconds waited. The qemu process must stay up."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not proc.alive(st["qemu"]):
            raise RuntimeError(f"qemu exited while booting; console log:\n{tail(st['log'], 40)}")
        probe = subprocess.run(
            ssh_command(lab, st, "true"), capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return time.monotonic() - started
        time.sleep(1)
    raise TimeoutError(
        f"no SSH on 127.0.0.1:{st['port']} after {timeout:.0f} s; console log:\n"
        + tail(st["log"], 40)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_files(lab: Lab, vdir: Path, images: Path) -> None:
    vdir.mkdir(parents=True, exist_ok=True)
    for disk in ("root", "esp"):
        overlay = vdir / f"{disk}.qcow2"
        if not overlay.exists():  # a stopped VM keeps its disks until `down`
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                 "-b", str(images / f"{disk}.img"), str(overlay)],
                check=True,
            )  # fmt: skip
    if not (vdir / "vars.fd").exists():
        shutil.copy(OVMF_VARS, vdir / "vars.fd")
    shutil.copy(f"{lab.root_key}.pub", vdir / "authorized_keys")
    (vdir / "hostname").write_text(host_id(lab) + "\n")
    environment, apt_proxy = proxy_files()
    (vdir / "environment").write_text(environment)
    (vdir / "apt-proxy").write_text(apt_proxy)


def start(lab: Lab, log=print, name: str = NAME) -> VmState:
    """Boot the VM (building its images first if needed) and wait for SSH; a running VM is
    kept as it is. Returns its state: qemu process, SSH port, console log."""
    kept = running(lab, name)
    if kept:
        return kept
    ssh.ensure_key(lab)
    images = ensure_image(log)
    vdir = vm_dir(lab, name)
    _write_files(lab, vdir, images)
    port = _free_port()
    console = vdir / "console.log"
    qemu = subprocess.Popen(
        qemu_command(vdir, port),
        stdin=subprocess.DEVNULL,
        stdout=open(vdir / "qemu.log", "w"),  # noqa: SIM115 - qemu keeps it open
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C meant for the caller must not reach the VM
    )
    st: VmState = {
        "qemu": proc.ident(qemu.pid),
        "port": port,
        "log": str(console),
        "images": str(images),
    }
    (vdir / "state.json").write_text(json.dumps(st))
    waited = wait_ssh(lab, st)
    admin.provision(lab, "127.0.0.1", port)
    log(f"{host_id(lab, name)}: SSH on 127.0.0.1:{port} after {waited:.0f} s")
    return st


def stop(lab: Lab, name: str = NAME, log=print) -> None:
    """Power the VM off (qemu then exits) and remove its files; idempotent."""
    st = state(lab, name)
    qemu = st["qemu"] if st else None
    if st and proc.alive(qemu):
        started = time.monotonic()
        subprocess.run(
            ssh_command(lab, st, "systemctl --no-block poweroff"),
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        if not proc.wait_gone(qemu, STOP_TIMEOUT):
            proc.kill(qemu, signal.SIGTERM)  # qemu exits at once; the guest's state is thrown away
            if not proc.wait_gone(qemu, 10):
                proc.kill(qemu, signal.SIGKILL)
                proc.wait_gone(qemu, 10)
        log(f"{host_id(lab, name)}: stopped in {time.monotonic() - started:.1f} s")
    hostfs.remove_tree(vm_dir(lab, name))


def inventory_hosts(lab: Lab) -> dict[str, list[tuple[str, dict]]]:
    """Inventory entries of the running VMs, by group: SSH through the host forward."""
    st = running(lab)
    if not st:
        return {}
    data = inventory.connection(lab, "127.0.0.1", st["port"])
    data.update(OVERRIDES.get(GROUP, {}))
    data.update(HOST_DATA)
    return {GROUP: [(host_id(lab), data)]}


# The VM machines `python -m lab up --machines ...` knows, beside the nspawn ones.
MACHINES = {NAME: GROUP}


def up(lab: Lab, log=print) -> VmState:
    """Boot the VM (kept if running) and write the lab's inventory with it."""
    if os.geteuid() != 0:
        raise SystemExit("the lab VM needs root (its image is built with mmdebstrap)")
    st = start(lab, log)
    inventory.write(lab, _container_ips(lab))  # the running containers, and this VM
    return st


def down(lab: Lab, log=print) -> None:
    """Stop every VM of the lab; idempotent."""
    for name in MACHINES:
        if vm_dir(lab, name).exists():
            stop(lab, name, log)


def status(lab: Lab) -> list[str]:
    lines = []
    for name in MACHINES:
        st = running(lab, name)
        if st:
            lines.append(
                f"  {name}: running (qemu TCG VM), SSH 127.0.0.1:{st['port']}, "
                f"qemu PID {st['qemu']['pid']}, console {st['log']}"
            )
        elif vm_dir(lab, name).exists():
            lines.append(f"  {name}: stopped (leftovers: run `python -m lab down`)")
    return lines


def _container_ips(lab: Lab) -> dict[str, str]:
    """The running nspawn machines (name -> address), kept in the inventory."""
    from lab import instance, nspawn

    found = {m: nspawn.running(lab, m) for m in instance.machines_with_state(lab)}
    return {m: st["ip"] for m, st in found.items() if st}
