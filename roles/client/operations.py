"""Two operations for the client's files: a config file that is backed up before it changes,
and one secret line in a dotenv file that never shows in pyinfra's output."""

from __future__ import annotations

import hashlib
import posixpath
from datetime import datetime
from io import StringIO

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.hiddenvalue import HiddenValue
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from roles.client.facts import SecretLine
from roles.common import host_state


@operation()
def config_file(dest: str, content: str, mode: str = "644"):
    """Ensures ``dest`` holds ``content``. A different file already there is first copied to
    ``<dest>.<YYYYmmdd-HHMMSS>.bak``, so the user's own edits are never lost silently."""
    current = host.get_fact(Sha1File, path=dest)
    if current and current != host_state.sha1(content):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        yield StringCommand("cp -p", QuoteString(dest), QuoteString(f"{dest}.{stamp}.bak"))
    yield from files.put._inner(src=StringIO(content), dest=dest, mode=mode)


@operation()
def secret_line(path: str, variable: str, value: str):
    """Ensures the dotenv file ``path`` (mode 0600, created with its folder if missing) has
    exactly one ``VARIABLE=value`` line; other lines are kept. The value is masked in pyinfra's
    output, and only a digest of the current line is ever read back."""
    current = host.get_fact(SecretLine, path=path, variable=variable)
    wanted = hashlib.sha256(f"{variable}={value}\n".encode()).hexdigest()
    if current and current["digest"] == wanted:
        if current["mode"] != "600":
            yield StringCommand("chmod 600", QuoteString(path))
        else:
            host.noop(f"{path} already holds {variable}")
        return
    tmp = f"{path}.tmp"
    yield StringCommand(
        "umask 077 && mkdir -p",
        QuoteString(posixpath.dirname(path)),
        "&& touch",
        QuoteString(path),
        "&& { grep -v",
        QuoteString(f"^{variable}="),
        QuoteString(path),
        "; printf '%s\\n'",
        QuoteString(HiddenValue(f"{variable}={value}")),
        "; } >",
        QuoteString(tmp),
        "&& chmod 600",
        QuoteString(tmp),
        "&& mv",
        QuoteString(tmp),
        QuoteString(path),
    )
