"""vfio settings: every bad value is refused naming its key; the VM/GPU contract's static check."""

import pytest

from roles.common.settings import SettingsError, validate_host
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
