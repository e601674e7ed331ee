"""Facts about the client's Continue files, read without printing any secret."""

from __future__ import annotations

import re

from pyinfra.api import FactBase, QuoteString, StringCommand
from typing_extensions import override


class SecretLine(FactBase):
    """The mode of a dotenv file and a SHA-256 digest of its ``NAME=`` lines (never the value:
    fact output is printed at high verbosity). None when the file does not exist.

    Output: ``{"mode": "600", "digest": "<64 hex>"}``; the digest of no line at all is that of
    empty input.
    """

    @override
    def command(self, path: str, variable: str) -> StringCommand:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", variable):
            raise ValueError(f"{variable!r} is not an environment variable name")
        # `stat -c` is GNU, `stat -f` BSD/macOS; sha256sum is GNU, `shasum -a 256` macOS.
        return StringCommand(
            "if [ -f",
            QuoteString(path),
            "]; then (stat -c %a",
            QuoteString(path),
            "2>/dev/null || stat -f %Lp",
            QuoteString(path),
            ") && grep",
            QuoteString(f"^{variable}="),
            QuoteString(path),
            "| (sha256sum 2>/dev/null || shasum -a 256); fi",
        )

    @override
    def process(self, output: list[str]) -> dict | None:
        if len(output) < 2:
            return None
        return {"mode": output[0].strip(), "digest": output[1].split()[0]}
