"""What an ai_guests host serves, read from its settings (as the planner filled them), and the
address the editor reaches it at: the input of the Continue config."""

from __future__ import annotations

import ipaddress

from pyinfra.api.exceptions import DeployError

from roles import planner
from roles.client.render import Api, Deployment, Served
from roles.client.settings import ClientSettings
from roles.common import registry
from roles.common.checks import WILDCARD_ADDRESSES
from roles.common.registry import Endpoint
from roles.common.services import host_address
from roles.common.settings import SettingsError
from roles.firewall.settings import FirewallSettings
from roles.proxy.front import for_person


def choose_guest(inventory, settings: ClientSettings):
    """The ai_guests host the editor uses: client_guest, or the only one."""
    guests = list(inventory.get_group("ai_guests", []))
    names = [g.name for g in guests]
    if settings.guest:
        for guest in guests:
            if guest.name == settings.guest:
                return guest
        raise DeployError(
            f"client_guest {settings.guest!r} is not in the ai_guests group; set it to one of "
            f"{', '.join(names) or '(none: add the guest to ai_guests in inventory.py)'}"
        )
    if len(guests) != 1:
        found = ", ".join(names) or "none"
        raise DeployError(
            f"the Continue config points at one AI guest; the inventory has {found}: set "
            "client_guest to the inventory name of the one the editor should use"
        )
    return guests[0]


def guest_settings(guest, cls):
    """``cls`` settings of ``guest``, with the model settings the planner fills."""
    data = {**guest.data.dict(), **planner.planned_data(guest)}
    settings, problems = cls.problems_in(data)
    if problems:
        raise SettingsError(guest.name, problems)
    return settings


def deployment(guest, settings: ClientSettings, ca_bundle: str = "") -> Deployment:
    """The models ``guest`` serves (every enabled registered service's) and their URLs as the
    editor on this machine sees them; ``ca_bundle``: the CA file its https APIs chain to."""
    plan = planner.plan_for_host(guest)
    models = []
    for service, own, endpoint in served_endpoints(guest, settings):
        api = Api(
            endpoint.label,
            endpoint.provider,
            endpoint.base_url(reach_address(guest, settings, endpoint)),
            key_env(endpoint),
            ca_bundle if endpoint.scheme == "https" else "",
        )
        for model in service.models(own, plan):
            roles = tuple(settings.model_roles.get(model.id, model.roles))
            if roles:
                models.append(Served(api, model.id, roles, model.context, model.tools))
    return Deployment(guest=guest.name, models=tuple(models))


def served_endpoints(
    guest, settings: ClientSettings | None = None
) -> list[tuple[registry.Service, object, Endpoint]]:
    """(service, its settings, its public endpoint) of every enabled service of ``guest``, with
    the model settings the planner fills; behind the TLS front door with the key of
    ``settings``' client_person."""

    def settings_of(cls):
        return guest_settings(guest, cls)

    person = settings.person if settings else ""
    return [
        (service, own, for_person(registry.public(service.endpoint(own), settings_of), person))
        for service, own in registry.running(settings_of, guest.groups)
    ]


def key_env(endpoint: Endpoint) -> str:
    """The .env variable holding the key the editor sends to ``endpoint`` ('' for none)."""
    return endpoint.key_secret.upper() if endpoint.auth == "bearer" else ""


def reach_address(guest, settings: ClientSettings, endpoint: Endpoint) -> str:
    """Where this machine reaches ``endpoint`` of ``guest``: client_api_host, a front's public
    host name, else by the address the endpoint listens on."""
    if settings.api_host:
        return settings.api_host
    if endpoint.public_host:
        return endpoint.public_host
    listen, key = endpoint.listen, endpoint.listen_key
    fallback = guest.data.get("ssh_hostname") or guest.name
    if listen in WILDCARD_ADDRESSES:
        return fallback
    if listen == "auto":
        if guest_settings(guest, FirewallSettings).enabled:
            return fallback  # 'auto' binds every address behind the firewall (listen_address)
        # The one address the service listens on; the SSH address if the guest is not
        # connected in this run.
        return (guest.connected and host_address(guest).address) or fallback
    if ipaddress.ip_address(listen).is_loopback:
        raise DeployError(
            f"{guest.name}: {key} is {listen}, which the editor on this machine cannot reach; "
            "listen on the LAN ('auto') or set client_api_host to the address of a tunnel"
        )
    return listen
