"""Plan tests of the base role: the real deploy against recorded Debian 12 and Rocky 9 facts."""

import re
from functools import partial

from guest_services_facts import probe_lines
from harness import ROOT, file_line, fixture, os_release_response, package_lines
from harness import run_plan as run_deploy

from roles import hf_tools, tabbyapi
from roles.base import debian_files
from roles.base.settings import BaseSettings
from roles.common.platform import DEBIAN_12, EL_9

run_plan = partial(run_deploy, deploy_file=ROOT / "tests" / "plan" / "deploys" / "base_only.py")
BASE_STATE = re.compile(r"getent passwd")  # the role's one HostState read, by its probe
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0ZXN0a2V5 me@laptop"


def converged(**probe) -> list[str]:
    """What the base role's read prints on a Debian 12 host it has already configured with the
    default settings and KEY, with ``probe`` lines changed (``None`` drops one)."""
    settings = BaseSettings(admin_ssh_keys=[KEY])
    lines = {
        "age": "age 120",
        "stamp": "stamp",
        "journal": "journal 0",
        "zone": "zone",
        "passwd": "passwd aicoder:x:1000:1000::/home/aicoder:/bin/bash",
        "homedir": "homedir",
        "sshdir": "sshdir 700 aicoder:aicoder",
        "localtime": "localtime /usr/share/zoneinfo/UTC",
        **probe,
    }
    files = [file_line(path, text) for path, text in debian_files(settings, DEBIAN_12).items()]
    files += [
        file_line("/etc/sudoers.d/90-aicoder", "aicoder ALL=(ALL:ALL) NOPASSWD: ALL\n", "440"),
        file_line("/etc/timezone", "UTC\n"),
        file_line("/home/aicoder/.ssh/authorized_keys", KEY + "\n", "600", "aicoder:aicoder"),
    ]
    # An AI guest's plain packages come with the base role's (roles/common/host_state.py).
    plain = [*hf_tools.PACKAGES, *tabbyapi.PACKAGES]
    packages = package_lines(settings.packages + list(DEBIAN_12.packages) + plain)
    return files + packages + probe_lines(v for v in lines.values() if v is not None)


def debian(**probe) -> dict:
    return {
        BASE_STATE: converged(**probe),
        **os_release_response(fixture("os-release.debian-12.txt")),
    }


def test_converged_debian_host_plans_no_change():
    """One read (the HostState fact) finds everything in place: no operation at all."""
    plan = run_plan({"ai_guests": {"base_admin_ssh_keys": [KEY]}}, debian())
    assert plan.error is None, plan.error
    assert plan.changed == []


def test_each_drift_is_put_right_alone():
    """Each difference the read finds plans the one operation that puts it right."""
    drifts = {
        "passwd": (dict(passwd="passwd "), r"useradd"),
        "keys dir": (dict(sshdir="sshdir 755 aicoder:aicoder"), r"chmod 700 /home/aicoder/.ssh"),
        "time zone": (dict(localtime="localtime /usr/share/zoneinfo/Europe/Paris"), r"ln -s"),
        "old index": (dict(age="age 999999"), r"^apt-get update"),
    }
    for what, (probe, command) in drifts.items():
        plan = run_plan({"ai_guests": {"base_admin_ssh_keys": [KEY]}}, debian(**probe))
        assert plan.error is None, (what, plan.error)
        assert plan.find(command), (what, plan.names())
        assert len(plan.changed) == 1, (what, plan.names())


def test_fresh_debian_host_gets_sources_packages_user_and_timezone():
    plan = run_plan({"ai_guests": {}}, os_release_response(fixture("os-release.debian-12.txt")))
    assert plan.find(r"debian\.sources"), plan.names()
    assert plan.find(r"^apt-get update"), plan.names()
    assert plan.find(r"apt-get .*install.* sudo"), plan.names()
    assert plan.find(r"useradd .*aicoder"), plan.names()
    assert plan.find(r"/usr/share/zoneinfo/UTC"), plan.names()


def test_rocky_host_uses_dnf_and_no_apt_sources():
    plan = run_plan({"hypervisors": {}}, os_release_response(fixture("os-release.rocky-9.4.txt")))
    assert plan.find(r"dnf .*install"), plan.names()
    assert not plan.find(r"apt-get|debian\.sources")


def test_curl_minimal_satisfies_curl_on_el9():
    # Rocky/Alma 9 images ship curl-minimal, which conflicts with `dnf install curl` (recorded).
    # The read asks rpm what provides each name, and curl-minimal provides curl.
    recorded = fixture("dnf-install-curl.rocky-9.1.curl-minimal-conflict.txt")
    nvr = re.search(r"installed package curl-minimal-(\S+)\.x86_64", recorded)[1]
    provided = [f"package ii  curl {nvr}"]  # the line the read prints for it
    others = [p for p in BaseSettings().packages + list(EL_9.packages) if p != "curl"]
    by_provides = re.compile(r"rpm -q --whatprovides .*getent passwd")
    rocky = os_release_response(fixture("os-release.rocky-9.4.txt"))
    plan = run_plan({"hypervisors": {}}, {by_provides: provided + package_lines(others), **rocky})
    assert plan.error is None, plan.error
    assert not plan.find(r"dnf .*install"), plan.commands
    fresh = run_plan({"hypervisors": {}}, {by_provides: package_lines(others), **rocky})
    assert fresh.find(r"^dnf install -y curl$")


def test_sources_file_lists_nonfree_components_for_all_three_suites():
    plan = run_plan({"ai_guests": {}}, os_release_response(fixture("os-release.debian-12.txt")))
    sources = plan.files["/etc/apt/sources.list.d/debian.sources"]
    assert sources.count("Components: main contrib non-free non-free-firmware") == 2
    assert "Suites: bookworm bookworm-updates" in sources
    assert "Suites: bookworm-security" in sources


def test_bad_settings_stop_the_deploy_before_any_operation():
    plan = run_plan(
        {"ai_guests": {"base_timezone": "Mars/Olympus Mons", "base_admin_user": "Root!"}},
        os_release_response(fixture("os-release.debian-12.txt")),
    )
    assert plan.error is not None and not plan.changed
    message = str(plan.error)
    assert "base_timezone" in message and "base_admin_user" in message


def test_interrupted_dpkg_run_is_finished_before_installing():
    responses = debian(journal="journal 2")
    responses[BASE_STATE] = [x for x in responses[BASE_STATE] if not x.startswith("package ")]
    plan = run_plan({"ai_guests": {}}, responses)
    configure = plan.find(r"dpkg --configure -a")
    assert configure and plan.commands.index(configure[0]) < plan.commands.index(
        plan.find(r"apt-get .*install ca-certificates")[0]
    )


def test_a_package_a_killed_dpkg_left_half_installed_is_reinstalled():
    """dpkg killed while unpacking leaves the package 'iHR' with no journal entry: the probe
    lists it and the run reinstalls what is still broken after `dpkg --configure -a`."""
    responses = debian(journal="journal 0")
    responses[BASE_STATE] = [*responses[BASE_STATE], "probe broken git"]
    plan = run_plan({"ai_guests": {"base_admin_ssh_keys": [KEY]}}, responses)
    (fix,) = plan.find(r"dpkg --configure -a")
    assert "apt-get install -y --reinstall" in fix and fix.endswith("dpkg --configure -a")
    assert [name.rsplit(" | ", 1)[-1] for name, _ in plan.changed] == [
        "Finish an interrupted dpkg run"
    ]


def test_a_time_zone_the_host_lacks_stops_the_deploy_before_any_change():
    plan = run_plan({"ai_guests": {"base_timezone": "Mars/Olympus"}}, debian(zone=None))
    assert plan.error is not None and not plan.changed
    assert "base_timezone 'Mars/Olympus'" in str(plan.error)


def test_apt_waits_for_the_lock_an_interrupted_run_left():
    plan = run_plan({"ai_guests": {}}, os_release_response(fixture("os-release.debian-12.txt")))
    assert (
        plan.files["/etc/apt/apt.conf.d/90aicoder-lock-timeout"] == 'DPkg::Lock::Timeout "600";\n'
    )
