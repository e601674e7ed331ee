"""Plan tests of the base role: the real deploy against recorded Debian 12 and Rocky 9 facts."""

from functools import partial

from harness import ROOT, fixture, os_release_response
from harness import run_plan as run_deploy

run_plan = partial(run_deploy, deploy_file=ROOT / "tests" / "plan" / "deploys" / "base_only.py")


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
    responses = os_release_response(fixture("os-release.debian-12.txt"))
    responses["ls -A /var/lib/dpkg/updates"] = ["120", "2", "stamp", "zone"]
    plan = run_plan({"ai_guests": {}}, responses)
    configure = plan.find(r"dpkg --configure -a")
    assert configure and plan.commands.index(configure[0]) < plan.commands.index(
        plan.find(r"apt-get .*install")[0]
    )


def test_a_time_zone_the_host_lacks_stops_the_deploy_before_any_change():
    responses = os_release_response(fixture("os-release.debian-12.txt"))
    responses["ls -A /var/lib/dpkg/updates"] = ["120", "0", "stamp", "nozone"]
    plan = run_plan({"ai_guests": {"base_timezone": "Mars/Olympus"}}, responses)
    assert plan.error is not None and not plan.changed
    assert "base_timezone 'Mars/Olympus'" in str(plan.error)


def test_apt_waits_for_the_lock_an_interrupted_run_left():
    plan = run_plan({"ai_guests": {}}, os_release_response(fixture("os-release.debian-12.txt")))
    assert (
        plan.files["/etc/apt/apt.conf.d/90aicoder-lock-timeout"] == 'DPkg::Lock::Timeout "600";\n'
    )
