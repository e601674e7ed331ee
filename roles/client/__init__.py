"""The editor's side, on the control machine (the inventory's ``clients`` group, ``@local``):
a Continue config.yaml pointing at what the AI guest serves, its API key in Continue's .env."""

from __future__ import annotations

import os
import posixpath
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError, PyinfraError
from pyinfra.facts.server import Home
from pyinfra.operations import files

from roles.client import operations
from roles.client.deployed import (
    choose_guest,
    deployment,
    guest_settings,
    key_env,
    served_endpoints,
)
from roles.client.render import CA_FILE, config_yaml
from roles.client.settings import ClientSettings
from roles.common import secrets
from roles.proxy import pki
from roles.proxy.settings import ProxySettings

__all__ = ["ClientSettings", "configure"]


def config_paths(settings: ClientSettings, home: str) -> tuple[str, str]:
    """(config.yaml, .env) with ~ expanded to the client user's ``home``. The .env is always
    ~/.continue/.env: Continue resolves ``${{ secrets.X }}`` from that file (and a workspace's
    .env files), never from a .env beside a config kept elsewhere (an assistant's, say)."""
    path = settings.config_path
    if path.startswith("~/"):
        path = posixpath.join(home, path[2:])
    return path, posixpath.join(home, ".continue", ".env")


@deploy("Client: Continue config")
def configure():
    """Ensures the Continue config.yaml lists the models the AI guest's registered services
    serve (tabbyAPI through the openai provider, Ollama through the ollama provider) at the
    addresses this machine reaches them, with each API key only as a reference such as
    ``${{ secrets.TABBYAPI_API_KEY }}``; the keys themselves are in ~/.continue/.env (mode 0600,
    other lines kept). A different config.yaml already there is
    backed up first; an unchanged one is left alone.

    Example, in your own deploy file:

    .. code:: python

        from roles import client

        client.configure()  # settings: client_* in group_data/clients.py
    """
    settings = ClientSettings.from_host(host)
    guest = choose_guest(host.inventory, settings)
    home = host.get_fact(Home)
    if not home:
        raise DeployError(f"{host.name}: no home directory ($HOME) to put the Continue config in")
    config_path, env_path = config_paths(settings, home)
    ca = _ca_certificate(guest_settings(guest, ProxySettings))
    ca_path = posixpath.join(posixpath.dirname(config_path), CA_FILE) if ca else ""
    if ca:
        files.put(name=f"the front door's CA {ca_path}", src=StringIO(ca), dest=ca_path)
    served = deployment(guest, settings, ca_path)
    text = config_yaml(served, settings.name, settings.autocomplete_options)

    operations.config_file(
        name=f"Continue config {config_path} (models of {guest.name})",
        dest=config_path,
        content=text,
    )
    keys = {
        key_env(endpoint): (endpoint.label, secrets.get_or_create(endpoint.key_secret))
        for _, _, endpoint in served_endpoints(guest, settings)
        if key_env(endpoint)
    }
    secrets.keep_operation()
    pki.keep_operation()
    for variable, (label, key) in keys.items():
        operations.secret_line(
            name=f"{label} key in {env_path}", path=env_path, variable=variable, value=key
        )


def _ca_certificate(proxy: ProxySettings) -> str | None:
    """The CA certificate the editor trusts: the deploy's own CA, else proxy_ca_file (None: no
    front door, or the user's certificate chains to a CA the system trusts)."""
    if proxy.plain_http:
        return None
    if not proxy.own_cert:
        return pki.load_or_create().cert_pem
    return Path(proxy.ca_file).read_text() if proxy.ca_file else None


def host_problems(host_) -> list[str]:
    """What the client's facts refuse ("key: why"), checked before any host plans: a home
    folder to expand ~ in, the config inside it, and (on this machine) a writable place."""
    settings = ClientSettings.from_host(host_)
    home = host_.get_fact(Home) or ""
    key = ClientSettings.key("config_path")
    if not home.startswith("/") or home == "/":
        shown = "unset" if home in ("", "~") else repr(home)  # the fact echoes ~ without HOME
        return [f"{key}: the client user has no home folder (HOME is {shown}); set HOME"]
    path, env = config_paths(settings, home)
    if not path.startswith(home.rstrip("/") + "/"):
        return [f"{key}: {path} is outside the home folder {home}; put it under ~/"]
    person = _person_problem(host_, settings)
    if person:
        return [person]
    if host_.name == "@local":
        # The keys always go to Continue's own .env, wherever the config is.
        for target in dict.fromkeys((path, env)):
            folder = posixpath.dirname(target)
            while not os.path.exists(folder):
                folder = posixpath.dirname(folder)
            if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
                return [f"{key}: {folder} (on the way to {target}) is not a folder you can write"]
    return []


def _person_problem(host_, settings: ClientSettings) -> str | None:
    """client_person must be one of the guest's proxy_people (whose keys the door accepts)."""
    if not settings.person:
        return None
    try:
        guest = choose_guest(host_.inventory, settings)
        proxy = guest_settings(guest, ProxySettings)
    except PyinfraError:  # no single guest, or its settings are bad: reported on their own
        return None
    if proxy.plain_http or settings.person in proxy.people:
        return None
    return (
        f"client_person: {settings.person!r} is not in {guest.name}'s proxy_people "
        f"({', '.join(proxy.people)}); add them there or pick one of those"
    )
