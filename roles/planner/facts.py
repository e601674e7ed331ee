"""GPU memory as the NVIDIA driver reports it, for planning models on the guest's card."""

from __future__ import annotations

import re

from pyinfra.api import FactBase
from typing_extensions import override

# nvidia-smi's table: "|   0  NVIDIA A100 80GB PCIe   On  | ... |      0MiB / 81920MiB | ..."
_GPU = re.compile(r"^\|\s+(\d+)\s+(.+?)\s{2,}\S+\s+\|")
_MEMORY = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")


class GpuMemory(FactBase):
    """The GPUs nvidia-smi lists: ``[{"index": 0, "name": ..., "total_mib": 81920}]``; an empty
    list when nvidia-smi is missing or fails (no driver yet, or no GPU)."""

    @override
    def command(self) -> str:
        return "! command -v nvidia-smi >/dev/null || nvidia-smi 2>/dev/null || true"

    @override
    def process(self, output: list[str]) -> list[dict]:
        return parse_nvidia_smi(output)


def parse_nvidia_smi(lines: list[str]) -> list[dict]:
    """The GPUs of ``nvidia-smi``'s default table: each GPU's first row names it, the next row
    holds its memory use ("0MiB / 81920MiB")."""
    gpus, current = [], None
    for line in lines:
        named = _GPU.match(line)
        if named:
            current = {"index": int(named.group(1)), "name": named.group(2).strip()}
            continue
        memory = _MEMORY.search(line)
        if current is not None and memory:
            current["total_mib"] = int(memory.group(2))
            gpus.append(current)
            current = None
    return gpus
