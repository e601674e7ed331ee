"""The settings framework: every bad value is rejected with a message naming its key."""

import pytest

from roles.base.settings import BaseSettings
from roles.common.settings import SettingsError, unknown_keys, validate_host


class FakeHost:
    """The two things validation reads from a pyinfra host."""

    def __init__(self, data):
        self.name = "testhost"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


BAD_INPUTS = [
    ("base_timezone", "Mars/Olympus Mons", "time zone"),
    ("base_timezone", 3, "expected a string"),
    ("base_admin_user", "Root!", "user name"),
    ("base_admin_user", "", "user name"),
    ("base_admin_ssh_keys", "ssh-ed25519 AAAA me", "expected a list"),
    ("base_admin_ssh_keys", ["not a key"], "SSH public key"),
    ("base_packages", ["curl; rm -rf /"], "package name"),
    ("base_packages", [1, 2], "expected a list of a string"),
    ("base_debian_mirror", "deb.debian.org/debian", "not a URL"),
    ("base_debian_mirror", "ftp://deb.debian.org/debian", "not a URL"),
    ("base_debian_security_mirror", None, "expected a string"),
    ("base_debian_components", ["main", "Non Free"], "component"),
    ("base_admin_passwordless_sudo", "yes", "True or False"),
    ("base_timzone", "UTC", "did you mean 'base_timezone'"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD_INPUTS)
def test_bad_value_is_rejected_naming_the_key(key, value, fragment):
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost({key: value}), [BaseSettings])
    message = str(caught.value)
    assert f"- {key}: " in message
    assert fragment in message
    assert "nothing was changed" in message


def test_all_problems_are_reported_at_once():
    data = {"base_timezone": 1, "base_admin_user": "X", "base_debian_mirror": "nope"}
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), [BaseSettings])
    assert {key for key, _ in caught.value.problems} == set(data)


def test_defaults_are_valid_and_documented():
    settings, problems = BaseSettings.problems_in({})
    assert problems == [] and settings.admin_user == "aicoder"
    for key, _default, doc in BaseSettings.docs():
        assert key.startswith("base_") and doc, key


def test_good_values_are_kept():
    host = FakeHost(
        {"base_timezone": "Europe/Berlin", "base_admin_ssh_keys": ["ssh-ed25519 AAAAC3 me@x"]}
    )
    validate_host(host, [BaseSettings])
    assert BaseSettings.from_host(host).timezone  # type: ignore[arg-type]  # a FakeHost == "Europe/Berlin"


def test_keys_of_other_roles_and_pyinfra_are_not_flagged():
    assert unknown_keys({"ssh_user": "root", "base_timezone": "UTC"}, [BaseSettings]) == []


def test_a_misspelt_prefix_is_caught_too():
    problems = unknown_keys({"bsae_timezone": "UTC"}, [BaseSettings])
    assert problems == [("bsae_timezone", "unknown setting; did you mean 'base_timezone'?")]


SUDO_LOCKOUT = {"ssh_user": "aicoder", "_sudo": True, "base_admin_passwordless_sudo": False}


def test_password_sudo_for_the_deploy_user_needs_a_sudo_password():
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(SUDO_LOCKOUT), [BaseSettings])
    assert "- base_admin_passwordless_sudo: " in str(caught.value)
    assert "_sudo_password" in str(caught.value)


@pytest.mark.parametrize(
    "change",
    [
        {"_sudo_password": "from-env"},  # sudo can be answered
        {"ssh_user": "root"},  # the deploy does not connect as the admin user
        {"base_admin_passwordless_sudo": True},
    ],
)
def test_password_sudo_is_fine_when_the_next_run_can_still_sudo(change):
    settings, problems = BaseSettings.problems_in({**SUDO_LOCKOUT, **change})
    assert problems == [] and settings is not None
