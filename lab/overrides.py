"""Host data the lab adds to its generated inventory, per group (offline/mirror settings).

Merged over the lab's own connection data in `<labdir>/inventory.py`; keep it plain literals.
"""

OVERRIDES: dict[str, dict] = {
    "ai_guests": {
        # Docker's and NVIDIA's repositories are unreachable here: Debian's docker.io and
        # docker-compose (v1) stand in, and the container toolkit is left out.
        "docker_source": "debian",
        "container_toolkit_enabled": False,
        # NVIDIA's CUDA repository (the default driver source) is unreachable too: Debian's 535
        # driver stands in. Ollama needs 550+ to use a GPU, so the deploy would refuse that pair
        # with ollama_gpu; the lab machine has no GPU, so Ollama runs on the CPU here.
        "nvidia_driver_source": "debian",
        "ollama_gpu": False,
        # Docker Hub and Hugging Face are unreachable and no mirror of them exists here: no
        # model download, no Ollama image (so its stack is installed but not started). GitHub
        # neither: tabbyAPI comes from the lab's mirror (TABBYAPI_RUNNABLE below) when there is
        # one, else its code is left out. Users, folders, config files and keys, units, the hf
        # CLI (PyPI) and the compose file check still run for real.
        "tabbyapi_git_url": None,
        "tabbyapi_model_repo": None,
        "ollama_pull_image": False,
        # vLLM on, so its user, folders, config, key file, unit and firewall port are deployed
        # and the client lists it; its pip install (vllm with CUDA torch: several GB) and its
        # model (Hugging Face) are left out by the lab-only setting, refused where a GPU is.
        # Its unit would not start anyway: it needs an NVIDIA GPU (roles/vllm).
        "vllm_enabled": True,
        "vllm_lab_skip_install": True,
    },
    "hypervisors": {
        # No usable KVM here (LAB-FACTS.md): emulated VMs. The images are the lab's own Debian
        # cloud images (lab/cloud_image.py), which the hv machine sees read-only; {version} is
        # each VM's release's, as in the official URLs.
        "guest_vm_domain_type": "qemu",
        "guest_vm_image_url": "file:///srv/aicoder-lab-images/debian-{version}-lab-amd64.qcow2",
        "guest_vm_image_sha512sums_url": "file:///srv/aicoder-lab-images/SHA512SUMS",
        # The bridge lives inside the hv machine, without uplink: the VM is reached from hv.
        "libvirt_bridge_address": "10.77.0.1/24",
        "guest_vm_vms": [
            {
                "name": "labvm",
                "hostname": "labvm-guest",
                "vcpus": 1,
                "memory_mb": 768,  # the machine is shared: keep the emulated VM small
                "disk_gb": 6,
                "cpu_pins": [1],
                "address": "10.77.0.10/24",
                # Debian 13: the hv machine (Debian 12) covers a Debian 12 hypervisor, the VM the
                # newer guest release; Debian 12 VMs boot in test_vfio_vm.py (lab/vm.py).
                "release": "debian13",
            }
        ],
    },
}

# Host data of one lab machine over its group's (machine name -> data).
MACHINE_OVERRIDES: dict[str, dict] = {
    "hv": {
        # The bridge takes over the machine's LAN uplink (lan0, statically 10.77.0.1/24 as
        # seeded below; not the link SSH uses) and carries its address ('auto'); the LAN peer
        # (lab/network.py) must answer through the bridge, or the change rolls back.
        "libvirt_bridge_uplink": "lan0",
        "libvirt_bridge_address": "auto",
        "libvirt_bridge_check_address": "10.77.0.254",
    },
}

# Added to an nspawn AI guest when tabbyAPI's source is reachable (lab/mirrors.py), with
# "tabbyapi_git_url" set to it: the base dependencies come from PyPI (the CUDA extra's torch and
# exllamav3 are out of reach and need a GPU), and the lab-only CPU launch starts it without them.
TABBYAPI_RUNNABLE: dict = {
    "tabbyapi_pip_extras": [],
    "tabbyapi_lab_unsafe_launch": True,
}

# Shell commands run once in a fresh machine before the first deploy (machine name -> commands):
# state a user's host already has, which the deploy must keep.
SEED_COMMANDS: dict[str, list[str]] = {
    "guest": [
        # A daemon.json key the deploy does not own: the merge must keep it (docker role).
        "mkdir -p /etc/docker && printf '%s\\n' '{\"labels\": [\"seeded-by=lab\"]}' "
        "> /etc/docker/daemon.json",
    ],
    "hv": [
        # A statically addressed LAN uplink in ifupdown, as Debian's installer leaves a host
        # (ifupdown itself arrives with the libvirt role; until then the address is set by hand).
        "mkdir -p /etc/network && printf '%s\\n' 'auto lo' 'iface lo inet loopback' '' "
        "'auto lan0' 'iface lan0 inet static' '    address 10.77.0.1/24' "
        "> /etc/network/interfaces",
        "ip addr add 10.77.0.1/24 dev lan0 && ip link set lan0 up",
    ],
}

# What the Vagrant lab test's run (tests/lab/test_vagrant.py) leaves out, because emulation (TCG)
# makes it too slow for CI; the nspawn lab covers each. What -> (the lab-only host data that
# leaves it out, why, what its infra checks say when they skip).
VAGRANT_LEFT_OUT: dict[str, tuple[dict, str, str]] = {
    "nvidia_driver": (
        {"nvidia_driver_lab_skip": True},
        "the driver's DKMS build takes far too long under emulation; "
        "tests/lab/test_guest_gpu_stack.py covers it",
        "nvidia_driver_lab_skip (LAB ONLY)",
    ),
    "tabbyAPI's code, virtualenv and service": (
        {"tabbyapi_git_url": None},
        "pip's install of its dependencies took over 6 min under emulation; "
        "tests/lab/test_guest_services.py covers it (from the lab's mirror)",
        "tabbyAPI's code is not installed",
    ),
}
