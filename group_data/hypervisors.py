"""Settings for the hypervisor group (GPU passthrough, libvirt, the guest VMs)."""
