"""What the proxy role writes: nginx's site for the front door (Jinja2 text). Pure functions, so
unit tests call them directly."""

from __future__ import annotations

import re
from dataclasses import dataclass

from roles.common.templates import render

CONF_DIR = "/etc/nginx/aicoder"
SITE = "/etc/nginx/conf.d/aicoder.conf"  # holds the keys: 0600 root (nginx's master reads it)
CERT = f"{CONF_DIR}/server.crt"
KEY = f"{CONF_DIR}/server.key"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"  # Debian's welcome page on port 80
UNIT = "nginx.service"
# RFC 6750's b64token: what a bearer key may hold, and nothing nginx would read as syntax or
# as a $variable inside the quoted strings of the site.
B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# A person's key is a key of the site's map ("Bearer <key>"), which must fit one bucket of its
# hash (map_hash_bucket_size 256): nginx refuses longer ones ("could not build map_hash") from
# 232 characters on. The server's own key is only a header value, with no such limit.
MAX_KEY = 200


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a person's bearer token in the site (None: it can)."""
    if not B64TOKEN.fullmatch(key):
        return "holds characters a bearer token cannot; use letters, digits and -._~+/"
    if len(key) > MAX_KEY:
        return f"is {len(key)} characters long; nginx's map takes at most {MAX_KEY}"
    return None


@dataclass(frozen=True)
class Route:
    """One model server behind the front door: https://<guest>:<port>/<name>/ -> 127.0.0.1."""

    name: str  # the path prefix, e.g. "tabbyapi"
    port: int  # where it listens on the guest's loopback
    open_paths: tuple[str, ...] = ()  # exact paths answered without a key (health checks)
    backend_key: str | None = None  # the server's own key, sent on for an accepted request


def site(port: int, routes: list[Route], keys: dict[str, str]) -> str:
    """nginx's server block: TLS on ``port``, a request to a route's path without one of
    ``keys`` (person -> key) as its bearer token answered 401, the open paths without it."""
    for person, key in keys.items():
        problem = key_problem(key)
        if problem:
            raise ValueError(f"the key of {person!r} {problem}")
    for route in routes:
        if route.backend_key is not None and not B64TOKEN.fullmatch(route.backend_key):
            raise ValueError(f"{route.name}'s own key holds characters a bearer token cannot")
    return render(
        "proxy/aicoder.conf.j2",
        port=port,
        routes=routes,
        keys=sorted(keys.items()),
        cert=CERT,
        key=KEY,
    )
