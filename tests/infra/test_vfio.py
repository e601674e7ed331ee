"""Checks of GPU passthrough on every hypervisor: IOMMU arguments active, each GPU in vfio_gpus
(every function of its IOMMU group) bound to vfio-pci, and nothing else taken from the host.

The host is read with the same probe and parsers the preflight uses (roles/preflight).
"""

from __future__ import annotations

import pytest
from role_settings import settings_of

from roles.preflight import parse
from roles.preflight.evaluate import evaluate
from roles.preflight.facts import PROBE, VfioState, vfio_state
from roles.vfio import render
from roles.vfio.settings import VfioSettings


@pytest.fixture
def gpus(host_data) -> list[str]:
    settings = settings_of(VfioSettings, host_data)
    if not settings.gpus:
        pytest.skip("vfio_gpus is empty: this hypervisor isolates no GPU")
    return settings.gpus


@pytest.fixture
def state(gpus, hypervisor) -> VfioState:  # skip before connecting
    out = hypervisor.run(PROBE)
    assert out.rc == 0, out.stderr
    return vfio_state(parse.split_sections(out.stdout.splitlines()))


def test_preflight_still_passes(state, gpus):
    assert evaluate(state, gpus).problems == []


def test_iommu_kernel_arguments_are_in_the_running_kernel(state, gpus):
    wanted = render.kernel_args(evaluate(state, gpus).platform)
    assert render.missing_args(state.cmdline, wanted) == [], " ".join(state.cmdline)


def test_every_function_of_each_gpu_group_is_bound_to_vfio_pci(state, gpus):
    functions = evaluate(state, gpus).passthrough
    assert functions, "no verified function to pass through (is the IOMMU on?)"
    drivers = {f.address: f.driver for f in functions}
    assert drivers == {address: "vfio-pci" for address in drivers}


def test_vfio_device_nodes_exist_for_the_groups(hypervisor, state, gpus):
    groups = {state.groups[f.address] for f in evaluate(state, gpus).passthrough}
    assert groups, "no verified function to pass through (is the IOMMU on?)"
    missing = [g for g in sorted(groups) if not hypervisor.file(f"/dev/vfio/{g}").exists]
    assert missing == [], f"no /dev/vfio node for the IOMMU groups {missing}"


def test_modprobe_config_claims_exactly_the_passed_ids(hypervisor, state, gpus):
    functions = evaluate(state, gpus).passthrough
    config = hypervisor.file(render.MODPROBE_CONF).content_string
    assert f"options vfio-pci ids={','.join(render.passthrough_ids(functions))}\n" in config


def test_the_host_keeps_its_boot_vga_and_other_devices(state, gpus):
    passed = {f.address for f in evaluate(state, gpus).passthrough}
    assert passed, "no verified function to pass through (is the IOMMU on?)"
    on_vfio = {a for a, f in state.functions.items() if f.driver == "vfio-pci"}
    assert on_vfio <= passed, f"bound to vfio-pci but not configured: {sorted(on_vfio - passed)}"
    assert not state.boot_vga & passed
