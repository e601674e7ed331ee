"""The editor's side, on the control machine (the inventory's ``clients`` group, ``@local``):
a Continue config.yaml pointing at what the AI guest serves, its API key in Continue's .env."""

from __future__ import annotations

import os
import posixpath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Home

from roles.client import operations
from roles.client.deployed import choose_guest, deployment, key_env, served_endpoints
from roles.client.render import config_yaml
from roles.client.settings import ClientSettings
from roles.common import secrets

__all__ = ["ClientSettings", "configure"]


def config_paths(settings: ClientSettings, home: str) -> tuple[str, str]:
    """(config.yaml, .env) with ~ expanded to the client user's ``home``."""
    path = settings.config_path
    if path.startswith("~/"):
        path = posixpath.join(home, path[2:])
    return path, posixpath.join(posixpath.dirname(path), ".env")


@deploy("Client: Continue config")
def configure():
    """Ensures the Continue config.yaml lists the models the AI guest's registered services
    serve (tabbyAPI through the openai provider, Ollama through the ollama provider) at the
    addresses this machine reaches them, with each API key only as a reference such as
    ``${{ secrets.TABBYAPI_API_KEY }}``; the keys themselves are in .env beside it (mode 0600,
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
    text = config_yaml(deployment(guest, settings), settings.name, settings.autocomplete_options)

    operations.config_file(
        name=f"Continue config {config_path} (models of {guest.name})",
        dest=config_path,
        content=text,
    )
    keys = {
        key_env(endpoint): (endpoint.label, secrets.get_or_create(endpoint.key_secret))
        for _, _, endpoint in served_endpoints(guest)
        if key_env(endpoint)
    }
    secrets.keep_operation()
    for variable, (label, key) in keys.items():
        operations.secret_line(
            name=f"{label} key in {env_path}", path=env_path, variable=variable, value=key
        )


def host_problems(host_) -> list[str]:
    """What the client's facts refuse ("key: why"), checked before any host plans: a home
    folder to expand ~ in, the config inside it, and (on this machine) a writable place."""
    settings = ClientSettings.from_host(host_)
    home = host_.get_fact(Home) or ""
    key = ClientSettings.key("config_path")
    if not home.startswith("/") or home == "/":
        shown = "unset" if home in ("", "~") else repr(home)  # the fact echoes ~ without HOME
        return [f"{key}: the client user has no home folder (HOME is {shown}); set HOME"]
    path, _ = config_paths(settings, home)
    if not path.startswith(home.rstrip("/") + "/"):
        return [f"{key}: {path} is outside the home folder {home}; put it under ~/"]
    if host_.name == "@local":
        folder = posixpath.dirname(path)
        while not os.path.exists(folder):
            folder = posixpath.dirname(folder)
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            return [f"{key}: {folder} (on the way to {path}) is not a folder you can write"]
    return []
