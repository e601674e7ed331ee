"""Where the lab lives and what it is called: one instance per AICODER_LAB_DIR/AICODER_LAB_NAME.

Environment:
  AICODER_LAB_DIR              lab state (key, per-machine files, inventory); default <repo>/.lab
  AICODER_LAB_NAME             instance name; decides the bridge, subnet, nft table (default lab)
  AICODER_LAB_CACHE            root filesystem cache (default /var/cache/aicoder-lab)
  AICODER_LAB_MIRROR           Debian archive (default http://deb.debian.org/debian)
  AICODER_LAB_SECURITY_MIRROR  Debian security archive (default .../debian-security)
  AICODER_LAB_TABBYAPI_BUNDLE  git bundle of tabbyAPI served to the AI guest (default
                               ../shared/mirrors/tabbyAPI.bundle beside the repo; lab/mirrors.py)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IFNAMSIZ = 15  # longest Linux interface name


@dataclass(frozen=True)
class MachineKind:
    group: str | None  # inventory group; None: not in the lab's inventory (not deployed by it)
    octet: int  # last octet of its address in the lab subnet
    # Its own copy of the root filesystem instead of a volatile overlay, kept across
    # `python -m lab restart`: for state that must survive a reboot (hv: libvirt's VMs).
    persistent: bool = False
    # Sees the lab's cloud image folder (lab/cloud_image.py) read-only, to create VMs from.
    guest_images: bool = False
    # A second link, lan0, as its "LAN uplink" (not the one SSH uses): a veth whose other end
    # sits in a network namespace of its own standing in for the LAN (lab/network.py).
    lan: bool = False
    # Runs Vagrant (tests/lab/test_vagrant.py): sees the lab's Vagrant box (lab/vagrant_box.py)
    # and this repository, with its .venv, read-only at the repository's own path.
    vagrant: bool = False
    # The Debian suite of its root filesystem (lab/rootfs.py).
    suite: str = "bookworm"


# The machines a lab can boot, by name.
MACHINES = {
    "guest": MachineKind("ai_guests", 10),
    "hv": MachineKind("hypervisors", 11, persistent=True, guest_images=True, lan=True),
    # Persistent: libvirt's volumes (the box, the VM's disk) go to disk, not to memory.
    "vagrant": MachineKind(None, 12, persistent=True, vagrant=True),
    # A Debian 13 AI guest beside the Debian 12 one: the same roles, the newer release.
    "guest13": MachineKind("ai_guests", 13, suite="trixie"),
}
DEFAULT_MACHINES = ["guest"]


def mirror() -> str:
    return os.environ.get("AICODER_LAB_MIRROR", "http://deb.debian.org/debian")


def security_mirror() -> str:
    return os.environ.get("AICODER_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")


def cache_dir() -> Path:
    return Path(os.environ.get("AICODER_LAB_CACHE", "/var/cache/aicoder-lab"))


def short(name: str, limit: int) -> str:
    """`name` if it fits in `limit` characters, else a prefix plus a hash of the whole name."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    return f"{name[: limit - 5]}-{digest}"


@dataclass(frozen=True)
class Lab:
    name: str
    dir: Path

    @classmethod
    def from_env(cls) -> Lab:
        name = os.environ.get("AICODER_LAB_NAME", "lab")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise SystemExit(f"AICODER_LAB_NAME={name!r}: use 1-31 of a-z, 0-9, '-'")
        labdir = Path(os.environ.get("AICODER_LAB_DIR", REPO / ".lab")).resolve()
        return cls(name, labdir)

    @property
    def bridge(self) -> str:
        return "br-" + short(self.name, IFNAMSIZ - 3)

    @property
    def nft_table(self) -> str:
        return "aicoder_lab_" + self.name.replace("-", "_")

    @property
    def lan_netns(self) -> str:
        """Network namespace holding the far end of the machines' LAN links."""
        return "aicoder-lan-" + self.name

    def lan_link(self, machine: str) -> str:
        """Host-side name of the machine's LAN veth (moved into lan_netns)."""
        return "vl-" + self.machine_id(machine)

    @property
    def cgroup(self) -> str:
        """Directory under each cgroup v1 hierarchy holding this lab's machines."""
        return f"aicoder-lab-{self.name}"

    @property
    def key(self) -> Path:
        """The admin user's key: what the inventory (the deploy, the infra checks) logs in with."""
        return self.dir / "id_ed25519"

    @property
    def root_key(self) -> Path:
        """Root's key, for the lab's own tooling only: the deploy cannot log in as root."""
        return self.dir / "root_ed25519"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.py"

    @property
    def state_file(self) -> Path:
        return self.dir / "lab.json"

    def machine_dir(self, machine: str) -> Path:
        return self.dir / "machines" / machine

    def machine_id(self, machine: str) -> str:
        """nspawn machine name, also the hostname and inventory name: unique across labs.

        nspawn names the host end of the veth "vb-<machine name>", so keep it to 12 characters.
        """
        return short(f"{self.name}-{machine}", IFNAMSIZ - 3)
