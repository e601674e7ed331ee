"""Operation names under pyinfra's deploy prefix.

pyinfra prints every operation as ``<deploy name> | <operation name>``, so an operation named
after its own role would read ``Ollama | Ollama: compose.yaml``: roles name an operation by what
it does alone, and shared helpers call :func:`op_name` for their subject.
"""

from __future__ import annotations

from pyinfra import host


def op_name(subject: str, what: str) -> str:
    """``what``, prefixed with ``subject`` unless the deploy's name already starts with it.

    ``op_name("Docker", "refresh the package index")`` is the bare action inside the Docker
    deploy, and ``NVIDIA CUDA repository: ...`` inside the NVIDIA driver's.
    """
    innermost = (host.current_deploy_name or "").rsplit(" | ", 1)[-1]
    return what if innermost.startswith(subject) else f"{subject}: {what}"
