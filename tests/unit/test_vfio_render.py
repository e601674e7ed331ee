"""What the vfio role writes: kernel arguments, modprobe.d, dracut and initramfs-tools, GRUB."""

import subprocess

import pytest

from roles.preflight.parse import PciFunction
from roles.vfio import render

GT710 = [
    PciFunction("0000:24:00.0", "VGA compatible controller", "0300", "10de:128b",
                modules=["nvidiafb", "nouveau", "nvidia_drm", "nvidia"]),
    PciFunction("0000:24:00.1", "Audio device", "0403", "10de:0e0f", modules=["snd_hda_intel"]),
]  # fmt: skip
# A Turing card with USB-C: GPU, audio, USB controller and UCSI (serial bus) functions.
RTX_USB_C = [
    PciFunction("0000:01:00.0", "VGA compatible controller", "0300", "10de:1e87"),
    PciFunction("0000:01:00.1", "Audio device", "0403", "10de:10f8"),
    PciFunction("0000:01:00.2", "USB controller", "0c03", "10de:1ad8", modules=["xhci_pci"]),
    PciFunction("0000:01:00.3", "Serial bus controller", "0c80", "10de:1ad9"),
]


@pytest.mark.parametrize(
    ("platform", "args"),
    [("intel", ["intel_iommu=on", "iommu=pt"]), ("amd", ["iommu=pt"]), (None, ["iommu=pt"])],
)
def test_kernel_args_per_platform(platform, args):
    assert render.kernel_args(platform) == args


def test_missing_args_against_a_recorded_cmdline():
    rt = ["BOOT_IMAGE=x", "ro", "intel_iommu=on", "intel_iommu=pt"]
    assert render.missing_args(rt, ["intel_iommu=on", "iommu=pt"]) == ["iommu=pt"]
    assert render.missing_args(["iommu=pt"], ["iommu=pt"]) == []


def test_modprobe_conf_for_a_gpu_and_its_audio():
    text = render.modprobe_conf(GT710)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "options vfio-pci ids=10de:128b,10de:0e0f",
        "softdep nouveau pre: vfio-pci",
        "softdep nvidia pre: vfio-pci",
        "softdep nvidia_drm pre: vfio-pci",
        "softdep nvidiafb pre: vfio-pci",
        "softdep snd_hda_intel pre: vfio-pci",
    ]


def test_modprobe_conf_adds_usb_c_drivers_only_for_a_card_with_usb_c():
    assert "xhci_hcd" not in render.modprobe_conf(GT710)
    text = render.modprobe_conf(RTX_USB_C)
    assert "options vfio-pci ids=10de:1e87,10de:10f8,10de:1ad8,10de:1ad9\n" in text
    for module in ("xhci_hcd", "xhci_pci", "i2c_nvidia_gpu", "nouveau", "snd_hda_intel"):
        assert f"softdep {module} pre: vfio-pci\n" in text


def test_ids_are_listed_once_for_two_functions_with_the_same_ids():
    twins = [
        PciFunction("0000:05:00.0", ids="10de:2204"),
        PciFunction("0000:0a:00.0", ids="10de:2204"),
    ]
    assert render.passthrough_ids(twins) == ["10de:2204"]


def test_dracut_conf_forces_the_vfio_drivers_and_carries_the_modprobe_options():
    text = render.dracut_conf()
    assert 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "\n' in text
    assert 'install_items+=" /etc/modprobe.d/vfio.conf "\n' in text


def test_initramfs_tools_block_lists_the_modules_one_per_line():
    lines = render.initramfs_modules().splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["vfio", "vfio_iommu_type1", "vfio_pci"]


@pytest.mark.parametrize(
    ("platform", "line"),
    [
        ("intel", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt"'),
        ("amd", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX iommu=pt"'),
    ],
)
def test_grub_dropin_appends_to_the_debian_defaults(platform, line):
    text = render.grub_dropin(render.kernel_args(platform))
    assert text.splitlines()[-1] == line


def test_default_grub_line_keeps_what_is_there_and_adds_what_is_missing():
    current = "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rd.lvm.lv=rl/root rhgb quiet"
    intel = render.default_grub_line(current, ["intel_iommu=on", "iommu=pt"])
    assert intel == f'GRUB_CMDLINE_LINUX="{current} intel_iommu=on iommu=pt"'
    assert render.default_grub_line(current + " iommu=pt", ["iommu=pt"]) is None
    assert render.default_grub_line(None, ["iommu=pt"]) == 'GRUB_CMDLINE_LINUX="iommu=pt"'


def test_functions_bound_by_address_leave_ids_for_a_modprobe_install_script():
    text = render.modprobe_conf(GT710, by_address=["0000:24:00.0", "0000:24:00.1"])
    assert "ids=" not in text
    assert f"install vfio-pci {render.OVERRIDE_SCRIPT} $CMDLINE_OPTS\n" in text
    assert "softdep nouveau pre: vfio-pci\n" in text  # loading nouveau first runs the script
    mixed = render.modprobe_conf(GT710, by_address=["0000:24:00.1"])
    assert "options vfio-pci ids=10de:128b\n" in mixed and "install vfio-pci" in mixed
    assert render.OVERRIDE_SCRIPT in render.dracut_conf(by_address=["0000:24:00.1"])
    assert render.OVERRIDE_SCRIPT not in render.dracut_conf()
    assert f"copy_file script {render.OVERRIDE_SCRIPT}\n" in render.initramfs_hook()


def test_the_override_script_marks_only_its_devices_then_loads_vfio_pci(tmp_path):
    """The rendered script run by sh against a stand-in sysfs and modprobe."""
    devices = tmp_path / "devices"
    for address in ("0000:05:00.0", "0000:05:00.1", "0000:0a:00.0"):
        (devices / address).mkdir(parents=True)
        (devices / address / "driver_override").write_text("(null)\n")
    (tmp_path / "bin").mkdir()
    modprobe = tmp_path / "bin" / "modprobe"
    modprobe.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/loaded\n')
    modprobe.chmod(0o755)
    script = render.override_script(["0000:05:00.0", "0000:05:00.1", "0000:09:00.0"])
    script = script.replace("/sys/bus/pci/devices", str(devices))
    subprocess.run(["/bin/sh", "-c", script, "sh", "disable_vga=1"], check=True,
                   env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})  # fmt: skip
    assert (devices / "0000:05:00.0" / "driver_override").read_text() == "vfio-pci\n"
    assert (devices / "0000:05:00.1" / "driver_override").read_text() == "vfio-pci\n"
    assert (devices / "0000:0a:00.0" / "driver_override").read_text() == "(null)\n"
    assert (tmp_path / "loaded").read_text() == "--ignore-install vfio-pci disable_vga=1\n"
