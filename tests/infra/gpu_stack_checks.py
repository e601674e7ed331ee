"""Helpers for the checks of the AI guest's GPU stack (driver, Docker, container toolkit).

A check that needs a container image makes one from the guest's own files (dash and the C
library, about 2 MB) with ``docker import``: it needs no registry (none is reachable in the lab,
and a user's guest may not reach one either) and installs nothing.
"""

from __future__ import annotations

import contextlib
import shlex

import pytest

from roles.nvidia_driver.facts import GPU_PROBE

IMAGE = "aicoder-infra-check:latest"
# Paths on the guest (merged /usr: tar -h stores the files behind the /bin and /lib links).
_IMAGE_FILES = [
    "bin/dash",
    "lib64/ld-linux-x86-64.so.2",
    "lib/x86_64-linux-gnu/libc.so.6",
    # nvidia-smi, which the toolkit mounts into GPU containers, links these too.
    "lib/x86_64-linux-gnu/libm.so.6",
    "lib/x86_64-linux-gnu/libdl.so.2",
    "lib/x86_64-linux-gnu/libpthread.so.0",
    "lib/x86_64-linux-gnu/librt.so.1",
]


def nvidia_gpus(host) -> list[str]:
    """PCI addresses of NVIDIA display devices (sysfs; works without a driver)."""
    out = host.check_output(GPU_PROBE)
    return [line.split()[1] for line in out.splitlines() if line.startswith("gpu ")]


def require_gpu(host) -> list[str]:
    gpus = nvidia_gpus(host)
    if not gpus:
        pytest.skip("no NVIDIA device on this host (sysfs lists none): GPU-only check")
    return gpus


def require_loaded_driver(host) -> None:
    require_gpu(host)
    if not host.file("/sys/module/nvidia").exists:
        pytest.skip("the nvidia module is not loaded: reboot the guest after the driver install")


@contextlib.contextmanager
def local_image(host):
    """A tiny image imported from the guest's own files, removed afterwards."""
    files = " ".join(_IMAGE_FILES)
    host.check_output(f"tar -C / -chf - {files} 2>/dev/null | docker import - {IMAGE} >/dev/null")
    try:
        yield IMAGE
    finally:
        host.run(f"docker rmi -f {IMAGE}")


def sh(*argv: str) -> str:
    return " ".join(shlex.quote(a) for a in argv)
