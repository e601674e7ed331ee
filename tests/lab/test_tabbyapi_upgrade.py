"""tabbyAPI moved between two commits of its source and back, and a broken ref, on the lab
guest with the real pyinfra CLI: each new release is built beside the running one and
switched to only once it answered /health; a failed one leaves the old one serving."""

from __future__ import annotations

import pytest
from deploy_run import pyinfra_deploy
from test_guest_services import NO_SOURCE, guest, has_tabbyapi_source, status

from roles.tabbyapi.settings import TabbyapiSettings

PINNED = TabbyapiSettings().git_ref
CURRENT = "readlink /opt/tabbyapi/current"
PID = "systemctl show -p MainPID --value tabbyapi.service"

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def tabby(deployed):
    if not has_tabbyapi_source(deployed):
        pytest.skip(NO_SOURCE)
    return deployed


def deploy_ref(lab, ref: str, timings: dict, label: str):
    run = pyinfra_deploy(lab.inventory, "--data", f'tabbyapi_git_ref="{ref}"')
    timings[label] = run.seconds
    return run


def test_move_to_the_parent_commit_and_back(tabby, lab_timings):
    parent = guest(tabby, "git -C /opt/tabbyapi/current/src rev-parse HEAD^")
    try:
        down = deploy_ref(tabby, parent, lab_timings, "tabbyAPI upgrade (new release)")
        assert down.ok, down.tail()
        names = down.changed_operations()
        assert f"tabbyAPI | run release {parent}+base" in names, names
        assert guest(tabby, CURRENT) == f"/opt/tabbyapi/releases/{parent}+base"
        assert guest(tabby, "git -C /opt/tabbyapi/current/src rev-parse HEAD") == parent
        assert status(tabby, "/health") == 200
        # The release it replaced stays, to go back to; the new one got its lock.
        assert guest(tabby, "ls /opt/tabbyapi/releases").split() == sorted(
            [f"{parent}+base", f"{PINNED}+base"]
        )
        assert guest(tabby, f"ls /opt/tabbyapi/locks/{parent}+base.txt")
    finally:
        back = deploy_ref(tabby, PINNED, lab_timings, "tabbyAPI back (kept release)")
    assert back.ok, back.tail()
    names = back.changed_operations()
    # Still there: nothing cloned or installed, just tried and switched to.
    assert not [n for n in names if "checkout of" in n or "dependencies" in n], names
    assert f"tabbyAPI | run release {PINNED}+base" in names, names
    assert guest(tabby, CURRENT) == f"/opt/tabbyapi/releases/{PINNED}+base"
    assert status(tabby, "/health") == 200


def test_a_broken_ref_fails_the_run_and_leaves_the_running_release_serving(tabby, lab_timings):
    before = guest(tabby, CURRENT), guest(tabby, PID)
    broken = deploy_ref(tabby, "no-such-ref", lab_timings, "tabbyAPI broken ref")
    assert not broken.ok
    assert "no-such-ref is not in" in broken.output, broken.tail()
    assert (guest(tabby, CURRENT), guest(tabby, PID)) == before
    assert status(tabby, "/health") == 200
    again = pyinfra_deploy(tabby.inventory)
    assert again.ok, again.tail()
    assert [n for n in again.changed_operations() if n.startswith("tabbyAPI")] == []
