"""The container_toolkit role's probe: GPUs, the loaded driver and the CDI spec."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from roles.nvidia_driver.facts import GPU_PROBE


@dataclass
class CdiState:
    gpus: list[str] = field(default_factory=list)
    driver_version: str = ""  # of the loaded nvidia module, "" when not loaded
    spec_exists: bool = False
    spec_current: bool = False  # the spec names the loaded driver's version

    def needs_spec(self) -> bool:
        return not self.spec_exists or not self.spec_current


def parse_state(lines: list[str]) -> CdiState:
    state = CdiState()
    for line in lines:
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if kind == "gpu":
            state.gpus.append(rest)
        elif kind == "driver":
            state.driver_version = rest
        elif kind == "spec":
            state.spec_exists = True
        elif kind == "spec-current":
            state.spec_current = True
    return state


def probe(spec: str = "/etc/cdi/nvidia.yaml") -> str:
    """Shell for the role's HostState read: NVIDIA GPUs present, the loaded driver's version,
    and whether the CDI spec exists and names that version (a spec generated before a driver
    upgrade points at the old libraries)."""
    spec = shlex.quote(spec)
    return "; ".join(
        [
            GPU_PROBE,
            "v=$(cat /sys/module/nvidia/version)",
            '[ -n "$v" ] && echo "driver $v"',
            f"[ -f {spec} ] && echo spec yes",
            f'[ -n "$v" ] && grep -qF "$v" {spec} && echo spec-current yes',
            "true",
        ]
    )
