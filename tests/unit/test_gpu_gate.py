"""roles/common/gpu.py: the one answer to "may GPU services start on this host?"."""

from __future__ import annotations

from types import SimpleNamespace

from roles.common import gpu


class FakeState:
    def __init__(self) -> None:
        self.handlers: list = []

    def add_callback_handler(self, handler) -> None:
        self.handlers.append(handler)


def fake_host() -> SimpleNamespace:
    return SimpleNamespace(name="guest", state=FakeState())


def test_services_may_start_until_the_driver_role_holds_them():
    host = fake_host()
    assert gpu.may_start(host, "tabbyAPI")
    gpu.hold(host, "REBOOT PENDING", ["nouveau holds the GPU"], "reboot the guest")
    assert not gpu.may_start(host, "tabbyAPI") and not gpu.may_start(host, "Ollama (GPU)")
    gpu.release(host)
    assert gpu.may_start(host, "tabbyAPI")


def test_the_run_ends_naming_what_waits_and_the_next_step(caplog):
    host = fake_host()
    gpu.hold(host, "REBOOT PENDING", ["a", "b"], "reboot the guest, then run the deploy again")
    gpu.may_start(host, "tabbyAPI")
    gpu.may_start(host, "tabbyAPI")  # asked twice, named once
    gpu.hold(host, "REBOOT PENDING", ["a", "b"], "again")  # one report per run, not two
    gpu.may_start(host, "tabbyAPI")
    (report,) = host.state.handlers
    caplog.clear()
    report.host_disconnect(host.state, host)
    assert caplog.text.strip().endswith(
        "[guest] REBOOT PENDING: a; b. Not started (they need the GPU): tabbyAPI. Next: again"
    )
