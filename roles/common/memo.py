"""Per-host memo for values computed once per deploy run (settings, probes)."""

from __future__ import annotations


def host_memo(host, name: str) -> dict:
    """A dict kept on the real host object for this run.

    Goes through attributes, never ``host.__dict__``: pyinfra's ``from pyinfra import host`` is a
    context proxy shared by every host, whose own ``__dict__`` would mix the hosts' values up;
    attribute access reaches the current real host.
    """
    attr = f"_aicoder_{name}"
    memo = getattr(host, attr, None)
    if memo is None:
        memo = {}
        setattr(host, attr, memo)
    return memo
