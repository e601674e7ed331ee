"""A Vagrant box (libvirt provider) built from the lab's Debian 12 cloud image: Vagrant Cloud,
where `debian/bookworm64` comes from, is unreachable here.

A libvirt box is a tar of `box.img` (qcow2), `metadata.json` and a small `Vagrantfile`. The
image is the lab's cloud image (lab/cloud_image.py) after one emulated boot with a NoCloud seed
that does what a box needs: the `vagrant` user with Vagrant's insecure key and passwordless sudo,
the root file system grown to VIRTUAL_SIZE_GB, this host's CA certificates (as in the lab's
root filesystem), DHCP on any NIC through systemd-networkd (so
Vagrant configures the host-only NIC the networkd way), cloud-init disabled afterwards. The box
is added under the lab-only name BOX_NAME; its Vagrantfile holds what this lab's libvirt needs
(no KVM: domain type qemu; UEFI: the image has no BIOS boot loader).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from lab import cloud_image, rootfs

BOX_NAME = "aicoder-lab/debian12"  # lab only: users get debian/bookworm64 (Vagrantfile)
BOX_FILE = "aicoder-lab-debian12-libvirt.box"
MOUNT = "/srv/aicoder-lab-box"  # where the vagrant lab machine sees the box's folder
VIRTUAL_SIZE_GB = 20
INSECURE_KEY = Path("/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/keys/vagrant.pub")
PREP_TIMEOUT = 900  # one TCG boot with cloud-init's first run: 1-2 min
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"

NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
# What libvirt in the lab machine needs; a box Vagrantfile sits below the project's, so the
# project's Vagrantfile (cpus, memory, disk size, networks) still decides the rest.
BOX_VAGRANTFILE = f"""\
# Lab-only box (lab/vagrant_box.py): the lab has no KVM and the image boots through UEFI.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
    lv.cpu_mode = "custom"
    lv.cpu_model = "qemu64"
    lv.loader = "{OVMF_CODE}"
    lv.nvram = "/var/lib/libvirt/qemu/nvram/aicoder-lab-vagrant_VARS.fd"
  end
end
"""


def user_data(key: str) -> str:
    config = {
        "users": [
            {
                "name": "vagrant",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [key],
            }
        ],
        "growpart": {"mode": "auto", "devices": ["/"]},
        # This host's HTTPS goes through an intercepting CA (LAB-FACTS): pip in the VM needs it.
        "ca_certs": {"trusted": [c.read_text() for c in sorted(rootfs.CA_DIR.glob("*.crt"))]},
        "write_files": [
            {"path": "/etc/systemd/network/99-aicoder-lab-dhcp.network", "content": NETWORK}
        ],
        "runcmd": [
            "systemctl enable systemd-networkd",
            # cloud-init's ifupdown file names this boot's NIC: networkd's DHCP takes over.
            "rm -f /etc/network/interfaces.d/50-cloud-init",
            "touch /etc/cloud/cloud-init.disabled",
            "truncate -s 0 /etc/machine-id",  # each machine makes its own at first boot
        ],
        "power_state": {"mode": "poweroff", "timeout": 60},
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def recipe() -> dict:
    return {
        "image": cloud_image.recipe(),
        "user_data": user_data("KEY"),
        "vagrantfile": BOX_VAGRANTFILE,
        "size": VIRTUAL_SIZE_GB,
        "version": 1,
    }


def ensure(log=print) -> Path:
    """The folder holding BOX_FILE for the current recipe, built first if missing."""
    r = recipe()
    if not INSECURE_KEY.is_file():
        raise SystemExit(f"no {INSECURE_KEY}: install Debian's vagrant (scripts/bootstrap.sh)")
    return rootfs.cached_build(
        "vagrantbox", rootfs.recipe_hash(r), _build, lambda f: (f / BOX_FILE).exists(),
        lambda _: False, "the lab's Vagrant box (about 2 min)", log,
    )  # fmt: skip


def _build(tmp: Path) -> None:
    tmp.mkdir()
    image = tmp / "box.img"
    shutil.copy(cloud_image.ensure(), image)
    subprocess.run(["qemu-img", "resize", "-q", str(image), f"{VIRTUAL_SIZE_GB}G"], check=True)
    (tmp / "user-data").write_text(user_data(INSECURE_KEY.read_text().strip()))
    (tmp / "meta-data").write_text("instance-id: aicoder-lab-vagrant-box\n")
    subprocess.run(
        ["cloud-localds", str(tmp / "seed.img"), str(tmp / "user-data"), str(tmp / "meta-data")],
        check=True,
    )
    shutil.copy(OVMF_VARS, tmp / "vars.fd")
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-monitor", "none", "-no-user-config", "-nodefaults",
        "-machine", "q35",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={tmp / 'vars.fd'}",
        "-drive", f"file={image},if=virtio,format=qcow2",
        "-drive", f"file={tmp / 'seed.img'},if=virtio,format=raw",
        "-nic", "user,model=virtio-net-pci",
        "-serial", f"file:{tmp / 'console.log'}",
    ]  # fmt: skip
    # cloud-init powers the machine off when done, which ends qemu.
    subprocess.run(cmd, check=True, timeout=PREP_TIMEOUT, stdin=subprocess.DEVNULL)
    console = (tmp / "console.log").read_text(errors="replace")
    if "Cloud-init" not in console or " finished at " not in console:
        raise RuntimeError(f"the box's prep boot did not finish cloud-init:\n{console[-3000:]}")
    virtual = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
    )["virtual-size"]
    metadata = {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual // 2**30}
    (tmp / "metadata.json").write_text(json.dumps(metadata) + "\n")
    (tmp / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    with tarfile.open(tmp / BOX_FILE, "w") as tar:
        for name in ("metadata.json", "Vagrantfile", "box.img"):
            tar.add(tmp / name, arcname=name)
    for name in ("box.img", "seed.img", "vars.fd", "user-data", "meta-data"):
        (tmp / name).unlink()
