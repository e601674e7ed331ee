"""The preflight's parsers, on recorded command outputs (tests/fixtures/el9, SOURCES.md there)
and on the fact's output captured from the lab VM (tests/plan/fixtures/README-vfio.md)."""

from pathlib import Path

from roles.preflight import parse
from roles.preflight.evaluate import evaluate
from roles.preflight.facts import vfio_state

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "tests" / "fixtures" / "el9"
LOCAL = REPO / "tests" / "plan" / "fixtures"


def fixture(name: str) -> str:
    for folder in (SHARED, LOCAL):
        if (folder / name).exists():
            return (folder / name).read_text()
    raise FileNotFoundError(name)


def test_lspci_nnk_reads_ids_class_driver_and_modules():
    functions = parse.parse_lspci(fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt"))
    gpu, audio = functions["0000:24:00.0"], functions["0000:24:00.1"]
    assert (gpu.class_name, gpu.class_code, gpu.ids) == (
        "VGA compatible controller",
        "0300",
        "10de:128b",
    )
    assert gpu.driver == "vfio-pci" and gpu.modules == [
        "nvidiafb",
        "nouveau",
        "nvidia_drm",
        "nvidia",
    ]
    assert (audio.ids, audio.driver, audio.modules) == ("10de:0e0f", "vfio-pci", ["snd_hda_intel"])
    assert gpu.is_display and not audio.is_display
    # A name holding brackets ([AMD/ATI], [Radeon ...]) does not hide the ids.
    assert functions["0000:2d:00.0"].ids == "1002:67df"
    assert functions["0000:2d:00.0"].driver == "amdgpu"
    assert functions["0000:00:00.0"].driver is None  # no "Kernel driver in use" line
    assert len(functions) == 49


def test_lspci_grep_output_with_separators_and_two_identical_cards():
    functions = parse.parse_lspci(
        fixture("lspci-nnk-grep-A3.nvidia-3090x2.nvidia-driver.partial.txt")
    )
    assert sorted(functions) == ["0000:05:00.0", "0000:05:00.1", "0000:0a:00.0", "0000:0a:00.1"]
    assert {f.ids for f in functions.values()} == {"10de:2204", "10de:1aef"}
    assert functions["0000:0a:00.1"].driver == "snd_hda_intel"


def test_lspci_without_ids_or_domain():
    functions = parse.parse_lspci(fixture("lspci-k.nvidia-3090.vfio-pci.ubuntu-20.04.partial.txt"))
    gpu = functions["0000:1b:00.0"]
    assert gpu.ids == "" and gpu.class_code == "" and gpu.is_display
    assert gpu.driver == "vfio-pci"
    assert functions["0000:1b:00.1"].driver is None  # its module is listed, no driver in use


def test_lspci_dnn_with_an_old_pci_ids_database():
    functions = parse.parse_lspci(fixture("lspci-Dnn.nvidia-3090.old-pciids.ubuntu-20.04.txt"))
    assert functions["0000:1b:00.0"].ids == "10de:2204"
    assert functions["0000:1b:00.1"].ids == "10de:1aef"


def test_iommu_groups_multiline_form():
    groups, described = parse.parse_iommu_groups(
        fixture("iommu-groups.clean.gt710-x570.ubuntu-20.04.txt")
    )
    assert groups["0000:24:00.0"] == groups["0000:24:00.1"] == 23
    assert [a for a, g in groups.items() if g == 23] == ["0000:24:00.0", "0000:24:00.1"]
    assert groups["0000:2a:00.3"] == 20
    assert described["0000:24:00.1"].ids == "10de:0e0f"


def test_iommu_groups_one_line_forms():
    groups, _ = parse.parse_iommu_groups(fixture("iommu-groups.clean.gtx1080ti-x570.txt"))
    assert [a for a, g in groups.items() if g == 30] == ["0000:0b:00.0", "0000:0b:00.1"]
    shared, described = parse.parse_iommu_groups(
        fixture("iommu-groups.shared-root-port.gt1030.ubuntu-6.8.txt")
    )  # lower-case "IOMMU group", groups out of order
    assert sorted(a for a, g in shared.items() if g == 2) == [
        "0000:00:01.0",
        "0000:01:00.0",
        "0000:01:00.1",
    ]
    assert described["0000:00:01.0"].class_code == "0604"


def test_iommu_groups_bare_addresses_as_the_fact_prints_them():
    groups, described = parse.parse_iommu_groups(
        "IOMMU Group 5 0000:00:05.0\nIOMMU Group 5 0000:00:05.1\n"
    )
    assert groups == {"0000:00:05.0": 5, "0000:00:05.1": 5} and described == {}


def test_cpuinfo_cmdline_and_boot_vga():
    vendor, flags = parse.parse_cpuinfo("vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx sse2\n")
    assert vendor == "intel" and "vmx" in flags
    assert parse.parse_cmdline(fixture("cmdline.rhel-9.4.iommu-pt.txt"))[-1] == "iommu=pt"
    text = (
        "/sys/bus/pci/devices/0000:00:01.0/boot_vga:1\n"
        "/sys/bus/pci/devices/0000:00:05.0/boot_vga:0\n"
    )
    assert parse.parse_boot_vga(text) == {"0000:00:01.0"}


def test_grubby_entries_and_default_grub_line():
    entries = parse.parse_grubby(fixture("grubby-info-all.rocky-9.1.txt"))
    assert [e.index for e in entries] == [0, 1, 2, 3]
    assert entries[0].kernel == "/boot/vmlinuz-5.14.0-162.6.1.el9_1.x86_64"
    assert "net.ifnames=0" in entries[0].args
    tuned = parse.parse_grubby(
        fixture("grubby-info-all.rhel-9.6-tuned-params.insights-fixture.txt")
    )
    assert tuned[1].args == ["ro", "audit=1", "$kernelopts", "$tuned_params"]
    assert parse.parse_default_grub_cmdline(
        'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="rhgb quiet"\n'
    ) == ("rhgb quiet")
    assert parse.parse_default_grub_cmdline("GRUB_TIMEOUT=5\n") is None


def test_grub_cfg_linux_lines():
    text = (
        "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0-56-amd64 root=UUID=x ro quiet\n"
        "\tinitrd\t/boot/initrd.img-6.1.0-56-amd64\n}\n"
    )
    assert parse.parse_grub_cfg_linux(text) == [["root=UUID=x", "ro", "quiet"]]


def test_the_whole_fact_output_captured_on_the_lab_vm():
    lines = fixture("vfio-host.debian-12-lab-vm.fresh.txt").splitlines()
    state = vfio_state(parse.split_sections(lines))
    assert state.cpu_vendor == "amd" and "svm" in state.cpu_flags
    assert "DMAR" in state.acpi_tables
    assert state.iommu_active
    assert state.group_members("0000:00:05.0") == ["0000:00:05.0", "0000:00:05.1"]
    assert state.boot_vga == {"0000:00:01.0"}
    assert state.functions["0000:00:05.1"].driver == "snd_hda_intel"
    assert state.functions["0000:00:05.0"].modules == ["aty128fb", "amdgpu"]
    assert state.grub_cfg and "console=ttyS0,115200" in state.grub_cfg[0]
    assert state.grubby == [] and state.default_grub_cmdline == ""


def lab_vm_state():
    return vfio_state(
        parse.split_sections(fixture("vfio-host.debian-12-lab-vm.fresh.txt").splitlines())
    )


def test_lab_vm_stand_in_passes_with_both_functions_and_the_intel_iommu():
    verdict = evaluate(lab_vm_state(), ["0000:00:05.0"])
    assert verdict.problems == []
    assert verdict.platform == "intel"  # the DMAR table, whatever the CPU vendor says
    assert [f.address for f in verdict.passthrough] == ["0000:00:05.0", "0000:00:05.1"]


def test_lab_vm_primary_adapter_and_a_missing_device_are_refused():
    (boot_vga,) = evaluate(lab_vm_state(), ["0000:00:01.0"]).problems
    assert "is the host's boot VGA" in boot_vga
    (missing,) = evaluate(lab_vm_state(), ["0000:00:09.0"]).problems
    assert "no PCI device at 0000:00:09.0" in missing
    assert "0000:00:05.0 VGA compatible controller [1002:5046]" in missing


def test_root_ports_are_bridges_by_class_or_driver():
    groups, described = parse.parse_iommu_groups(
        fixture("iommu-groups.shared-root-port.gt1030.ubuntu-6.8.txt")
    )
    assert described["0000:00:01.0"].is_bridge  # PCI bridge [0604]
    assert not described["0000:01:00.0"].is_bridge and not described["0000:00:1f.0"].is_bridge
    assert parse.PciFunction("0000:00:01.0", driver="pcieport").is_bridge  # no class read


def test_framebuffers_and_what_the_host_uses_a_gpu_for():
    found = parse.parse_framebuffers(
        "fb0 /sys/devices/pci0000:00/0000:00:03.1/0000:2d:00.0\n"
        "fb1 /sys/devices/platform/simple-framebuffer.0\n"
    )
    assert found == {"0000:2d:00.0": "fb0"}
    state = vfio_state(
        {
            "lspci": fixture("lspci-nnk.gt710-vfio.x570.ubuntu-20.04.txt"),
            "framebuffers": "fb0 /sys/devices/pci0000:00/0000:00:03.1/0000:2d:00.0\n",
            "boot_vga": "/sys/bus/pci/devices/0000:2d:00.0/boot_vga:1\n",
        }
    )
    assert state.host_uses("0000:2d:00.0") == [
        "driver amdgpu",
        "console framebuffer fb0",
        "boot VGA",
    ]
    assert state.host_uses("0000:24:00.0") == []  # on vfio-pci already
    assert state.kernel_cmdline is None  # no /etc/kernel/cmdline section: no such file
    assert vfio_state({"kernel_cmdline": "ro quiet\n"}).kernel_cmdline == ["ro", "quiet"]
