"""What the vfio role writes: kernel arguments, modprobe.d, dracut and initramfs-tools, GRUB."""

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
