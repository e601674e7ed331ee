"""vfio settings: every bad value is refused naming its key; the VM/GPU contract's static check."""

import pytest

from roles.common.settings import SettingsError, validate_host
from roles.vfio.assignment import settings_problems
from roles.vfio.settings import VfioSettings


class FakeHost:
    def __init__(self, data):
        self.name = "testhost"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("vfio_gpus", ["01:00.0"], "neither a PCI address like 0000:01:00.0"),
        ("vfio_gpus", ["0000:01:00.0:1"], "neither a PCI address"),
        ("vfio_gpus", ["10DE:2204"], "lower case"),
        ("vfio_gpus", ["nvidia"], "vendor:device ids like 10de:2204"),
        ("vfio_gpus", "0000:01:00.0", "expected a list of a string"),
        ("vfio_gpus", ["0000:01:00.0", "0000:01:00.0"], "lists 0000:01:00.0 twice"),
        ("vfio_reboot", "yes", "True or False"),
        ("vfio_reboot_timeout", 5, "out of range"),
        ("vfio_only", 1, "True or False"),
        ("vfio_gpu", ["0000:01:00.0"], "did you mean 'vfio_gpus'"),
    ],
)
def test_bad_value_is_refused_naming_the_key(key, value, fragment):
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost({key: value}), [VfioSettings])
    assert f"- {key}: " in str(caught.value)
    assert fragment in str(caught.value)


def test_addresses_and_ids_are_both_accepted():
    data = {"vfio_gpus": ["0000:01:00.0", "10de:2204"], "vfio_reboot": True}
    settings, problems = VfioSettings.problems_in(data)
    assert problems == [] and settings.gpus == ["0000:01:00.0", "10de:2204"]
    assert VfioSettings().gpus == [] and VfioSettings().reboot is False


def test_settings_problems_for_the_vm_role():
    vms = {"ai": ["0000:01:00.0", "0000:01:00.1"], "other": ["0000:01:00.1"]}
    problems = settings_problems(["0000:01:00.0"], vms)
    assert problems == [
        ("guest_vm_vms", "VM 'other' gets 0000:01:00.1, but 0000:01:00 is given to VM 'ai' "
         "too; a GPU goes to one VM only"),
    ]  # fmt: skip
    missing = settings_problems(["0000:01:00.0"], {"ai": ["0000:02:00.0"]})
    assert "which vfio_gpus does not pass through; add its GPU (0000:02:00.0)" in missing[0][1]
    # GPUs given by ids are matched on the host, by the preflight
    assert settings_problems(["10de:2204"], {"ai": ["0000:02:00.0"]}) == []
