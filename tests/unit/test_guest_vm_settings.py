"""guest_vm settings: every bad VM value is refused with a key like guest_vm_vms[0].memory_mb."""

import pytest

from roles.common.platform import DEBIAN_12, DEBIAN_13
from roles.common.settings import SettingsError, validate_host
from roles.guest_vm.settings import GuestVmSettings, Vm


class FakeHost:
    def __init__(self, data):
        self.name = "testhost"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


def problems(vms, **other):
    data = {"guest_vm_vms": vms, **{f"guest_vm_{k}": v for k, v in other.items()}}
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), [GuestVmSettings])
    return dict(caught.value.problems)


GOOD = {"name": "ai", "vcpus": 2, "memory_mb": 4096}


def test_defaults_and_a_full_vm_are_valid():
    vm = {
        "name": "ai-guest",
        "vcpus": 4,
        "memory_mb": 16384,
        "hugepages": True,
        "cpu_pins": [2, 3, 4, 5],
        "disk_gb": 100,
        "gpus": ["0000:01:00.0", "0000:01:00.1"],
        "address": "192.168.1.50/24",
        "gateway": "192.168.1.1",
        "dns": ["192.168.1.1"],
        "hostname": "ai",
        "mac": "52:54:00:aa:bb:cc",
        "uuid": "6f1c0d6e-0b1a-4c8e-9d1e-2a3b4c5d6e7f",
        "autostart": True,
    }
    validate_host(FakeHost({"guest_vm_vms": [vm]}), [GuestVmSettings])
    validate_host(FakeHost({}), [GuestVmSettings])


BAD_VMS = [
    ({"vcpus": 2}, "guest_vm_vms[0].name", "missing"),
    ({**GOOD, "memory_mb": 100}, "guest_vm_vms[0].memory_mb", "at least 512"),
    ({**GOOD, "memory_mb": "4G"}, "guest_vm_vms[0].memory_mb", "expected an integer"),
    ({**GOOD, "memroy_mb": 4096}, "guest_vm_vms[0].memroy_mb", "did you mean 'memory_mb'"),
    ({**GOOD, "name": "AI guest"}, "guest_vm_vms[0].name", "a-z"),
    ({**GOOD, "vcpus": 0}, "guest_vm_vms[0].vcpus", "1 to 256"),
    ({**GOOD, "cpu_pins": [1]}, "guest_vm_vms[0].cpu_pins", "one host CPU per vCPU (2)"),
    ({**GOOD, "cpu_pins": [1, 1]}, "guest_vm_vms[0].cpu_pins", "each host CPU once"),
    ({**GOOD, "gpus": ["01:00.0"]}, "guest_vm_vms[0].gpus", "PCI address like 0000:01:00.0"),
    ({**GOOD, "gpus": ["0000:01:00.0"] * 2}, "guest_vm_vms[0].gpus", "twice"),
    ({**GOOD, "address": "192.168.1.50"}, "guest_vm_vms[0].address", "prefix length"),
    ({**GOOD, "address": "dhcp", "gateway": "10.0.0.1"}, "guest_vm_vms[0].gateway", "static"),
    (
        {**GOOD, "address": "10.0.0.5/24", "gateway": "10.0.1.1"},
        "guest_vm_vms[0].gateway",
        "not in",
    ),
    ({**GOOD, "mac": "52-54-00-aa-bb-cc"}, "guest_vm_vms[0].mac", "52:54:00:12:34:56"),
    ({**GOOD, "uuid": "not-a-uuid"}, "guest_vm_vms[0].uuid", "UUID"),
    ({**GOOD, "disk_gb": 2}, "guest_vm_vms[0].disk_gb", "at least 4"),
]


@pytest.mark.parametrize(("vm", "key", "fragment"), BAD_VMS)
def test_bad_vm_value_names_its_key(vm, key, fragment):
    found = problems([vm])
    assert key in found, found
    assert fragment in found[key]


def test_a_gpu_given_to_two_vms_is_refused():
    found = problems(
        [
            {"name": "a", "gpus": ["0000:01:00.0"]},
            {"name": "b", "gpus": ["0000:02:00.0", "0000:01:00.0"]},
        ]
    )
    assert "one VM only" in found["guest_vm_vms[1].gpus"]


def test_overlapping_cpu_pins_are_refused():
    found = problems(
        [
            {"name": "a", "vcpus": 2, "cpu_pins": [2, 3]},
            {"name": "b", "vcpus": 2, "cpu_pins": [3, 4]},
        ]
    )
    assert "overlap" in found["guest_vm_vms[1].cpu_pins"]


def test_duplicate_names_macs_and_addresses_are_refused():
    found = problems(
        [
            {"name": "a", "address": "10.0.0.5/24", "mac": "52:54:00:00:00:01"},
            {"name": "a", "address": "10.0.0.5/24", "mac": "52:54:00:00:00:01"},
        ]
    )
    assert {"guest_vm_vms[1].name", "guest_vm_vms[1].mac", "guest_vm_vms[1].ip"} <= set(found)


def test_top_level_settings_are_checked():
    found = problems([], domain_type="xen", image_url="ftp://x/y.qcow2", image_sha512="abc")
    assert {"guest_vm_domain_type", "guest_vm_image_url", "guest_vm_image_sha512"} <= set(found)


def test_uuid_and_mac_are_stable_and_differ_per_name():
    a, b = Vm(name="a"), Vm(name="b")
    assert (a.uuid, a.mac) == (Vm(name="a").uuid, Vm(name="a").mac)
    assert a.uuid != b.uuid and a.mac != b.mac
    assert a.mac.startswith("52:54:00:") and a.hostname == "a"


def test_hugepages_total_counts_only_vms_that_ask():
    settings, _ = GuestVmSettings.problems_in(
        {
            "guest_vm_vms": [
                {"name": "a", "memory_mb": 4096, "hugepages": True},
                {"name": "b", "memory_mb": 8192},
            ]
        }
    )
    assert settings.hugepages_mb() == 4096


def test_emulator_cpus_must_not_be_the_vcpus_own():
    vm = {**GOOD, "cpu_pins": [2, 3], "emulator_cpus": [3]}
    assert "other than the vCPUs' own" in problems([vm])["guest_vm_vms[0].emulator_cpus"]


def test_1g_hugepages_need_whole_gib_and_become_kernel_arguments_per_node():
    vm = {**GOOD, "hugepages": True, "memory_mb": 4608}
    found = problems([vm], hugepage_size="1G")
    assert "multiple of 1024" in found["guest_vm_vms[0].memory_mb"]
    data = {
        "guest_vm_hugepage_size": "1G",
        "guest_vm_vms": [
            {**GOOD, "name": "a", "hugepages": True, "memory_mb": 16384, "numa_node": 1},
            {**GOOD, "name": "b", "hugepages": True, "memory_mb": 8192},
            {**GOOD, "name": "c", "memory_mb": 8192},  # no hugepages: nothing reserved
        ],
    }
    settings, found = GuestVmSettings.problems_in(data)
    assert not found, found
    assert settings.gigantic_pages() == {1: 16, -1: 8}
    assert settings.kernel_args() == ["default_hugepagesz=1G", "hugepagesz=1G", "hugepages=24"]
    two_m, _ = GuestVmSettings.problems_in({**data, "guest_vm_hugepage_size": "2M"})
    assert two_m.kernel_args() == [] and two_m.hugepages_mb() == 24576


def test_each_release_fills_the_image_urls_and_only_known_placeholders_pass():
    settings = GuestVmSettings()
    assert settings.image(DEBIAN_12) == (
        "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2",
        "https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS",
    )
    url, sums = settings.image(DEBIAN_13)
    assert url.endswith("/trixie/latest/debian-13-generic-amd64.qcow2")
    assert sums.endswith("/trixie/latest/SHA512SUMS")
    mirror = GuestVmSettings(image_url="file:///srv/debian.qcow2")  # no placeholder: as it is
    assert mirror.image(DEBIAN_13)[0] == "file:///srv/debian.qcow2"
    found = problems([GOOD], image_url="https://m/{release_name}/x.qcow2")
    assert "{codename} and {version}" in found["guest_vm_image_url"]
    assert Vm(name="ai").os is DEBIAN_12  # Debian 12 stays the default guest
