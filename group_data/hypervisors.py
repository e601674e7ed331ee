"""Settings for the hypervisor group (GPU passthrough, libvirt, the guest VMs)."""

# --- vfio: the GPUs the host gives to its VMs (checked first by the preflight) -----------------
# Each GPU by PCI address (`lspci -Dnn`) or by vendor:device ids (every card with those ids).
# Its whole IOMMU group (the HDMI audio function, ...) is bound to vfio-pci; list the same
# addresses under "gpus" of the VM that gets it (guest_vm_vms below). A PCI bridge (the CPU's
# root port on most Intel desktops) in the group stays with the host. The preflight refuses,
# before any change, a GPU that shares its IOMMU group with other host devices, the boot VGA,
# a device that does not exist, an IOMMU that is off, and a GPU given to two VMs. A second,
# identical card the host keeps is left alone: the GPU is then bound by its PCI address.
# vfio_gpus = ["0000:01:00.0"]
# The first run needs one reboot (the GPU is taken from the host only at boot). With
# vfio_reboot the run reboots, checks and goes on to start the VMs; without it, it starts no
# VM with a GPU and ends with REBOOT PENDING and the command to run after the reboot:
# vfio_reboot = False  # also once from the command line: pyinfra ... --data vfio_reboot=true
# vfio_reboot_timeout = 900
# Only the preflight and GPU isolation on the hypervisors (no libvirt, no VMs), where the VMs
# are managed apart:
# vfio_only = False

# --- libvirt: the bridge the VMs join, and where their disks live -----------------------------
# The NIC that carries your LAN; the bridge takes it over (and its address), so the VMs get
# addresses on the LAN. Leave it out for a bridge that only the host and the VMs share.
# libvirt_bridge = "br0"
# libvirt_bridge_uplink = "enp3s0"
# libvirt_bridge_address = "dhcp"  # or a static "192.168.1.5/24" with:
# libvirt_bridge_gateway = "192.168.1.1"
# libvirt_bridge_dns = ["192.168.1.1"]
# libvirt_image_dir = "/var/lib/libvirt/images"  # elsewhere gets the SELinux type virt_image_t

# --- guest_vm: the AI guest VMs -----------------------------------------------------------------
# Each VM is created once from its release's Debian cloud image ("release" below); its disk is
# never overwritten or shrunk. The admin user and its SSH keys come from base_admin_user / base_admin_ssh_keys.
# A VM with a static address is added to the ai_guests group by inventory.py by itself.
# guest_vm_vms = [
#     {
#         "name": "ai-guest",
#         "vcpus": 8,
#         "memory_mb": 32768,
#         "hugepages": True,               # reserves 32768 MiB of 2 MiB pages on the host
#         "cpu_pins": [2, 3, 4, 5, 6, 7, 8, 9],  # one host CPU per vCPU, or leave out
#         "disk_gb": 200,                  # raise to grow; never shrinks
#         "gpus": ["0000:01:00.0", "0000:01:00.1"],  # every function of the GPU (see vfio_gpus)
#         "address": "192.168.1.50/24",    # or "dhcp" (then list the VM in inventory.py yourself)
#         "gateway": "192.168.1.1",
#         "dns": ["192.168.1.1"],
#         "release": "debian12",           # the default; "debian13" for Debian 13
#     },
# ]
# A mirror of the image (file:///path/x.qcow2 works too) with its checksum:
# guest_vm_image_url = "https://cloud.debian.org/images/cloud/{codename}/latest/debian-{version}-generic-amd64.qcow2"
# guest_vm_image_sha512 = ""  # empty: looked up in guest_vm_image_sha512sums_url
# guest_vm_domain_type = "kvm"  # "qemu" only where the host has no /dev/kvm (slow emulation)
