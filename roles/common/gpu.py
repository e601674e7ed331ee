"""May GPU-bound services start on this host? One answer, given by the driver role and asked by
every serving role (tabbyAPI, Ollama with a GPU, any later one), so that no service is started,
restarted or waited on while the driver waits for a reboot (it would run without CUDA, or fail
after a long wait), and the run ends saying what waits on the reboot and what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra import logger
from pyinfra.api.state import BaseStateCallback
from typing_extensions import override

from roles.common.memo import host_memo


@dataclass
class Hold:
    headline: str  # "REBOOT PENDING", or why else the GPU cannot be used
    reasons: list[str]
    next_step: str
    waiting: list[str] = field(default_factory=list)  # the services held back

    def message(self) -> str:
        waiting = ", ".join(self.waiting) or "no GPU service is configured"
        return (
            f"{self.headline}: {'; '.join(self.reasons)}. Not started (they need the GPU): "
            f"{waiting}. Next: {self.next_step}"
        )


def _memo(host) -> dict:
    return host_memo(host, "gpu")


def hold(host, headline: str, reasons: list[str], next_step: str) -> None:
    """Record that GPU-bound services must not start on ``host`` in this run (the driver role
    calls this); the message is printed again when pyinfra disconnects, after the results."""
    _memo(host)["hold"] = Hold(headline, reasons, next_step)
    logger.warning(f"[{host.name}] {headline}: {'; '.join(reasons)}. Next: {next_step}")
    state = host.state
    if not getattr(state, "_aicoder_gpu_report", False):
        state._aicoder_gpu_report = True
        state.add_callback_handler(_Report())


def release(host) -> None:
    """The driver is (or will be, after this run's reboot and check) loaded: services may start."""
    _memo(host).pop("hold", None)


def held(host) -> Hold | None:
    return _memo(host).get("hold")


def may_start(host, service: str) -> bool:
    """Whether ``service`` (a GPU-bound one) may be started and waited on in this run. When it
    may not, it is named in the end-of-run message."""
    found = held(host)
    if found is None:
        return True
    if service not in found.waiting:
        found.waiting.append(service)
    logger.warning(f"[{host.name}] {service} is not started: {found.headline}")
    return False


class _Report(BaseStateCallback):
    """Prints each held host's message as the run ends (after pyinfra's results table)."""

    @staticmethod
    @override
    def host_disconnect(state, host) -> None:
        found = held(host)
        if found is not None:
            logger.warning(f"[{host.name}] {found.message()}")
