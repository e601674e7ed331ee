"""The vfio role through the real deploy.py on recorded EL9 hosts (and the lab VM's Debian 12):
the exact commands, a converged host planning nothing, and reboots only when allowed."""

import re

import pytest
from harness import file_line, fixture, os_release_response, run_plan
from pyinfra.operations import server as pyinfra_server
from vfio_facts import (
    GT710,
    INTEL_CPU,
    VFIO_READ,
    X570_GROUPS,
    X570_LSPCI_BOUND,
    el9_fresh_amd,
    grubby_after,
    host,
    isolated_gpus,
    recorded_host,
)

from roles.common import host_state
from roles.preflight import facts
from roles.vfio import MANAGED_HEADER, render

HV = {"vfio_only": True, "firewall_allowed_networks": ["192.168.1.0/24"]}
GT710_DATA = {**HV, "vfio_gpus": [GT710]}
ALMA_LINE = (
    "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/almalinux-swap "
    "rd.lvm.lv=almalinux/root rd.lvm.lv=almalinux/swap"
)
# files.put's own housekeeping around an upload, and python.call's functions
_HOUSEKEEPING = ("mkdir -p ", "chown ", "chmod ", "FunctionCommand(")


def vfio_ops(plan) -> list[tuple[str, list[str]]]:
    return [(name, cmds) for name, cmds in plan.changed if name.startswith("VFIO")]


def vfio_commands(plan) -> list[str]:
    return [c for _, cmds in vfio_ops(plan) for c in cmds if not c.startswith(_HOUSEKEEPING)]


def vfio_names(plan) -> list[str]:
    return [name.rpartition(" | ")[2] for name, _ in vfio_ops(plan)]


def test_el9_amd_host_plans_grubby_default_grub_modprobe_dracut_and_reports_the_reboot(caplog):
    plan = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd())
    assert plan.error is None, plan.error
    commands = vfio_commands(plan)
    assert commands[0] == "grubby --update-kernel=ALL --args=iommu=pt"
    # files.line's sed on /etc/default/grub (pyinfra escapes the slashes of the new line)
    assert commands[1].startswith("sed -i") and "' /etc/default/grub" in commands[1]
    assert "s/^GRUB_CMDLINE_LINUX=.*$/GRUB_CMDLINE_LINUX=" in commands[1]
    assert ALMA_LINE.replace("/", r"\/") + ' iommu=pt"/' in commands[1]
    assert commands[2:] == [
        "upload /etc/modprobe.d/vfio.conf",
        "upload /etc/dracut.conf.d/vfio.conf",
        "dracut -f --regenerate-all",
    ]
    modprobe = plan.files["/etc/modprobe.d/vfio.conf"]
    assert "options vfio-pci ids=10de:128b,10de:0e0f\n" in modprobe
    assert "softdep nouveau pre: vfio-pci\n" in modprobe
    assert 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "' in plan.files[render.DRACUT_CONF]
    names = vfio_names(plan)
    assert names[-1].startswith("VFIO: REBOOT PENDING (vfio_reboot is False): kernel arguments")
    assert not plan.find("reboot")
    assert "REBOOT PENDING" in caplog.text and f"{GT710} from no driver to vfio-pci" in caplog.text


def test_el9_intel_host_with_the_iommu_still_off_binds_the_gpu_slot_in_the_same_phase(caplog):
    # Rocky 9.4 without IOMMU arguments on an Intel CPU: no IOMMU groups yet. The GPU's slot
    # (both functions) is bound at the reboot that turns the IOMMU on, so one reboot does; the
    # group is checked after it, before any VM starts.
    found = host(
        cpuinfo=INTEL_CPU,
        cmdline=fixture("cmdline.rocky-9.4.no-iommu.txt"),
        lspci=X570_LSPCI_BOUND,
        grubby=fixture("grubby-info-all.rocky-9.1.txt"),
        default_grub=fixture("default-grub.almalinux-9.4.txt"),
    )
    plan = run_plan({"hypervisors": GT710_DATA}, found)
    assert plan.error is None, plan.error
    commands = vfio_commands(plan)
    assert commands[0] == "grubby --update-kernel=ALL --args='intel_iommu=on iommu=pt'"
    assert r'rd.lvm.lv=almalinux\/swap intel_iommu=on iommu=pt"/' in commands[1]
    assert commands[2:] == [
        "upload /etc/modprobe.d/vfio.conf",
        "upload /etc/dracut.conf.d/vfio.conf",
        "dracut -f --regenerate-all",
    ]
    assert "options vfio-pci ids=10de:128b,10de:0e0f\n" in plan.files[render.MODPROBE_CONF]
    assert "checks the GPUs' IOMMU groups before any VM starts" in caplog.text


def test_rhel_9_6_entries_with_tuned_params_and_kernelopts_get_grubby_once():
    # Recorded RHEL 9.6 entries: one with $tuned_params, the rescue one with $kernelopts (the
    # grubenv variable of hosts upgraded from EL8). grubby is asked until every entry has them.
    recorded = fixture("grubby-info-all.rhel-9.6-tuned-params.insights-fixture.txt")
    fresh = el9_fresh_amd(grubby=recorded)
    fresh.update(os_release_response(fixture("os-release.rhel-9.6.txt")))
    plan = run_plan({"hypervisors": GT710_DATA}, fresh)
    assert plan.error is None, plan.error
    assert plan.find(r"^grubby --update-kernel=ALL --args=iommu=pt$")
    done = el9_converged(grubby=grubby_after(recorded, ["iommu=pt"]))
    done.update(os_release_response(fixture("os-release.rhel-9.6.txt")))
    assert vfio_ops(run_plan({"hypervisors": GT710_DATA}, done)) == []


KERNEL_CMDLINE = fixture("kernel-cmdline.almalinux-9.lxc-image.txt")


def test_el9_host_with_etc_kernel_cmdline_gets_the_arguments_there_too():
    # kernel-install builds the next kernel's boot entry from /etc/kernel/cmdline where the host
    # has one (EL9 cloud images, leapp upgrades): without them there, a kernel update would
    # boot without the IOMMU arguments.
    plan = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd(kernel_cmdline=KERNEL_CMDLINE))
    assert plan.error is None, plan.error
    (line,) = plan.find(r"/etc/kernel/cmdline")
    assert line == (
        "printf '%s\\n' 'root=/dev/loop0p2 ro console=tty1 console=ttyS0 iommu=pt' "
        "> /etc/kernel/cmdline"
    )
    assert vfio_commands(plan)[0] == "grubby --update-kernel=ALL --args=iommu=pt"


def test_el9_host_without_etc_kernel_cmdline_gets_no_such_file():
    plan = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd())
    assert plan.error is None, plan.error
    assert not plan.find(r"/etc/kernel/cmdline")


def converged_sections(**extra) -> dict:
    """The AMD host after the deploy and its reboot: iommu=pt in /proc/cmdline (RHEL 9.4's
    recorded one has it), both functions on vfio-pci (the X570's recorded lspci), the arguments
    in every boot entry and in /etc/default/grub."""
    sections = {
        "cmdline": fixture("cmdline.rhel-9.4.iommu-pt.txt"),
        "lspci": X570_LSPCI_BOUND,
        "dmesg": fixture("dmesg-iommu.amd-vi.ubuntu-20.04.with-params.txt"),
        "grubby": grubby_after(fixture("grubby-info-all.rocky-9.1.txt"), ["iommu=pt"]),
        "default_grub": fixture("default-grub.almalinux-9.4.txt").replace(
            f'{ALMA_LINE}"', f'{ALMA_LINE} iommu=pt"'
        ),
    }
    sections.update(extra)
    return sections


def el9_converged(**extra):
    """Fake responses of the converged host, its files as the role writes them for it."""
    sections = converged_sections(**extra)
    written = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd(**sections)).files
    files = {p: written[p] for p in (render.MODPROBE_CONF, render.DRACUT_CONF)}
    return el9_fresh_amd(files=files, **sections)


def test_converged_el9_host_plans_nothing():
    plan = run_plan({"hypervisors": GT710_DATA}, el9_converged())
    assert plan.error is None, plan.error
    assert vfio_ops(plan) == []


def test_a_converged_host_with_the_arguments_in_etc_kernel_cmdline_plans_nothing():
    done = KERNEL_CMDLINE.strip() + " iommu=pt\n"
    plan = run_plan({"hypervisors": GT710_DATA}, el9_converged(kernel_cmdline=done))
    assert plan.error is None, plan.error
    assert vfio_ops(plan) == []


def test_a_converged_host_never_reboots_even_when_allowed():
    plan = run_plan({"hypervisors": {**GT710_DATA, "vfio_reboot": True}}, el9_converged())
    assert vfio_ops(plan) == [] and not plan.find("reboot")


def test_a_stale_initramfs_is_rebuilt_even_when_the_files_are_in_place():
    stale = "/boot/initramfs-5.14.0-427.13.1.el9_4.x86_64.img\n"
    plan = run_plan({"hypervisors": GT710_DATA}, el9_converged(stale_initramfs=stale))
    assert vfio_commands(plan) == ["dracut -f --regenerate-all"]


def test_a_changed_softdep_rewrites_modprobe_and_rebuilds_the_initramfs():
    # The files were written for a host whose lspci named no modules; this one names them.
    stale_files = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd()).files
    files = {p: stale_files[p] for p in (render.MODPROBE_CONF, render.DRACUT_CONF)}
    plan = run_plan({"hypervisors": GT710_DATA}, el9_fresh_amd(files=files, **converged_sections()))
    assert vfio_commands(plan) == ["upload /etc/modprobe.d/vfio.conf", "dracut -f --regenerate-all"]
    assert "softdep nvidia_drm pre: vfio-pci\n" in plan.files[render.MODPROBE_CONF]


def test_a_gpu_on_another_driver_is_only_a_pending_reboot():
    plan = run_plan({"hypervisors": GT710_DATA}, el9_converged(lspci=X570_GROUPS))
    names = vfio_names(plan)
    assert len(names) == 1 and names[0].startswith("VFIO: REBOOT PENDING")
    assert f"{GT710} from no driver to vfio-pci" in names[0]


def after_reboot(monkeypatch, responses: dict):
    """Let pyinfra's reboot skip its waiting (real sleeps; the fake host reports an unchanged
    uptime, which it takes as rebooted) and make every read after the first (the preflight's)
    see the host of ``responses`` (fake responses, as el9_converged gives)."""
    monkeypatch.setattr(pyinfra_server, "sleep", lambda seconds: None)
    after = facts.from_host_state(host_state.parse(responses[VFIO_READ].splitlines()))
    first_read, reads = facts.read, []

    def read(paths=()):
        reads.append(paths)
        return first_read(paths) if len(reads) == 1 else after

    monkeypatch.setattr(facts, "read", read)
    return reads


def test_reboot_when_allowed_then_the_binding_is_checked(monkeypatch):
    after_reboot(monkeypatch, el9_converged())
    found = el9_fresh_amd()
    found["/proc/uptime"] = "100"
    plan = run_plan({"hypervisors": {**GT710_DATA, "vfio_reboot": True}}, found)
    assert plan.error is None, plan.error
    assert plan.find(r"^\( sleep 1 && reboot \)")
    names = vfio_names(plan)
    assert names[-2].startswith("reboot to apply kernel arguments iommu=pt")
    assert names[-1] == "check the kernel arguments and the vfio-pci binding after the reboot"
    assert not any("PENDING" in name for name in names)


def test_a_gpu_not_on_vfio_pci_after_the_reboot_fails_the_deploy_saying_so(monkeypatch, caplog):
    after_reboot(monkeypatch, el9_converged(lspci=X570_GROUPS))
    found = el9_fresh_amd()
    found["/proc/uptime"] = "100"
    with pytest.raises(Exception, match="No hosts remaining"):
        run_plan({"hypervisors": {**GT710_DATA, "vfio_reboot": True}}, found)
    assert (
        f"{GT710} is bound to no driver, not vfio-pci: see `lspci -nnk -s {GT710}`" in caplog.text
    )


def test_debian_lab_vm_capture_plans_the_drop_in_update_grub_modprobe_and_initramfs():
    found = recorded_host("vfio-host.debian-12-lab-vm.fresh.txt")
    plan = run_plan({"hypervisors": {**HV, "vfio_gpus": ["0000:00:05.0"]}}, found)
    assert plan.error is None, plan.error
    commands = vfio_commands(plan)
    assert commands[:3] == [
        "upload /etc/default/grub.d/vfio.cfg",
        "update-grub",
        "upload /etc/modprobe.d/vfio.conf",
    ]
    assert commands[-1] == "update-initramfs -u -k all"
    assert plan.files[render.GRUB_DROPIN].endswith(
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt"\n'
    )
    modprobe = plan.files[render.MODPROBE_CONF]
    assert "options vfio-pci ids=1002:5046,8086:293e\n" in modprobe
    assert "softdep aty128fb pre: vfio-pci\n" in modprobe  # lspci's modules for the stand-in


def test_a_vm_given_an_isolated_gpu_passes_and_a_converged_host_plans_nothing():
    # The helper other roles' plan tests use for a hypervisor whose GPU is isolated already.
    functions = ["0000:01:00.0", "0000:01:00.1"]
    for os_release in ("os-release.debian-12.txt", "os-release.rocky-9.4.txt"):
        data, found = isolated_gpus(functions, os_release)
        vms = [{"name": "ai", "gpus": functions}]
        plan = run_plan({"hypervisors": {**HV, **data, "guest_vm_vms": vms}}, found)
        assert plan.error is None, plan.error
        assert vfio_ops(plan) == []


def test_debian_lab_vm_after_deploy_and_reboot_plans_nothing():
    # Recorded on the lab VM after the lab test's reboot: args in /proc/cmdline and grub.cfg,
    # the initramfs-tools block, both stand-in functions on vfio-pci.
    found = recorded_host("vfio-host.debian-12-lab-vm.converged.txt", gpus=["0000:00:05.0"])
    plan = run_plan(
        {"hypervisors": {**HV, "vfio_gpus": ["0000:00:05.0"], "vfio_reboot": True}}, found
    )
    assert plan.error is None, plan.error
    assert vfio_ops(plan) == []


# vfio_gpus emptied on a host the role had configured: its bindings go, the initramfs follows.
RELEASE_READ = re.compile(r"&& echo block")


def released_host(
    os_release: str, ours: list[str], block: bool = False, releasing: bool = False
) -> dict:
    """The release read's answer: ``ours`` are the files with the role's header."""
    lines = [f"probe ours {path}" for path in ours] + (["probe block"] if block else [])
    if releasing:
        lines.append(file_line(f"{render.MODPROBE_CONF}.released", "vfio-pci ids\n"))
    found = {RELEASE_READ: "\n".join(lines)}
    found.update(os_release_response(fixture(os_release)))
    return found


def test_emptied_vfio_gpus_on_el9_removes_the_bindings_and_rebuilds_the_initramfs():
    paths = [render.MODPROBE_CONF, render.DRACUT_CONF]
    plan = run_plan({"hypervisors": HV}, released_host("os-release.rocky-9.4.txt", paths))
    assert plan.error is None, plan.error
    commands = vfio_commands(plan)
    assert f"rm -f {render.DRACUT_CONF}" in commands
    conf = render.MODPROBE_CONF
    assert commands[-3:] == [
        f"mv -f {conf} {conf}.released",
        "dracut -f --regenerate-all",
        f"rm -f {conf}.released",
    ]
    assert any("give the GPUs back" in name for name in vfio_names(plan))


def test_emptied_vfio_gpus_on_debian_drops_the_initramfs_block_too():
    found = released_host("os-release.debian-12.txt", [render.MODPROBE_CONF], block=True)
    plan = run_plan({"hypervisors": HV}, found)
    assert plan.error is None, plan.error
    commands = vfio_commands(plan)
    marks = "/^# BEGIN ai-coding-server vfio$/,/^# END ai-coding-server vfio$/d"
    assert commands[0] == f"sed -i '{marks}' {render.INITRAMFS_MODULES}"
    assert "update-initramfs -u -k all" in commands


def test_an_interrupted_release_is_finished_by_the_next_run():
    # Only the renamed modprobe file is left: the rebuild may not have completed.
    found = released_host("os-release.debian-12.txt", [], releasing=True)
    plan = run_plan({"hypervisors": HV}, found)
    releasing = f"{render.MODPROBE_CONF}.released"
    assert vfio_commands(plan) == ["update-initramfs -u -k all", f"rm -f {releasing}"]


def test_the_release_finds_every_file_the_role_writes_by_its_header():
    # Release removes only files carrying the header (an admin's own vfio.conf stays).
    written = [
        render.modprobe_conf([]),
        render.dracut_conf(["0000:01:00.0"]),
        render.override_script(["0000:01:00.0"]),
        render.initramfs_hook(),
    ]
    assert all(MANAGED_HEADER in text for text in written)


def test_a_host_the_role_never_configured_plans_no_release():
    plan = run_plan({"hypervisors": HV}, released_host("os-release.debian-12.txt", []))
    assert plan.error is None, plan.error
    assert vfio_ops(plan) == []
