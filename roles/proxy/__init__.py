"""The TLS front door of the AI guest: nginx terminating TLS for every model server, each server
on 127.0.0.1 behind it, a request let through only with one person's own key.

Why nginx (Debian's, 1.22 in Debian 12) and not Caddy (2.6 is packaged too): the keys and the TLS
key stay readable by root only, since nginx's master process reads its configuration and
certificates as root, where Caddy runs as its own user and would need to read them; one ``map``
turns a bearer token into the person it belongs to (so the access log names people, never
keys); ``nginx -t`` checks a new configuration before a graceful reload, which keeps the old one
serving if it fails; and there is no admin API listening on the guest's loopback (Caddy's would
let any local user rewrite the proxy).

Every service in the registry (roles/common/registry.py) is routed, by its name:
https://<guest>:<proxy_port>/<service>/ (roles/proxy/front.py tells the registry so, and the
firewall and the client follow). A service with keys of its own keeps them: tabbyAPI still
listens on loopback with authentication on, and the front door, once it accepted a person's
key, sends tabbyAPI's key on instead. Ollama has none; the front door is its only lock.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server

from roles.common import checks, host_state, prefetch, registry, secrets
from roles.common.host_state import UNCHANGED, FileState, OpResult, State
from roles.common.platform import DEBIAN, os_family
from roles.common.services import ADDRESS_PROBE, parse_host_address, secret_file, unit_lifecycle
from roles.proxy import pki, render
from roles.proxy.settings import KEY_PREFIX, ProxySettings, key_secret, proxied, revoked_record

__all__ = ["ProxySettings", "configure", "host_problems", "person_keys", "proxied"]

PACKAGES = ["nginx", "openssl"]


def person_keys(settings: ProxySettings) -> dict[str, str]:
    """Each listed person's key from the secrets, generated once if not given."""
    return {p: secrets.get_or_create(key_secret(p)) for p in settings.people}


def listed_people(inventory) -> set[str]:
    """Everyone in the proxy_people of any AI guest of the inventory (one secrets file serves
    them all, so a key is revoked only when nobody lists its person)."""
    guests = inventory.get_group("ai_guests", [])
    return {person for guest in guests for person in ProxySettings.from_host(guest).people}


def revoke_removed(inventory) -> None:
    """Record in the secrets file each key of secrets.yml whose person no guest lists any more,
    so a person added again later never gets the revoked key back (host_problems refuses it)."""
    listed = listed_people(inventory)
    for name in secrets.file_names():
        person = name.removeprefix(KEY_PREFIX)
        if name.startswith(KEY_PREFIX) and person not in listed:
            value = secrets.get(name)  # the key in use (AICODER_API_KEY_<PERSON> first)
            if value:
                secrets.record(revoked_record(value), person)


def routes() -> list[render.Route]:
    """Every enabled registered service of this guest behind the front door (its own endpoint
    on loopback): its health path open, the rest behind the people's keys; a service with keys
    of its own gets its key from the door (tabbyAPI)."""
    found = []
    for service, settings in registry.running(lambda cls: cls.from_host(host), host.groups):
        own = service.endpoint(settings)
        backend_key = secrets.get_or_create(own.key_secret) if own.auth == "bearer" else None
        found.append(render.Route(own.service, own.port, (own.health_path,), backend_key))
    return found


def probe() -> str:
    """The guest's names and addresses, its certificate, and whether its key matches it."""
    cert, key = shlex.quote(render.CERT), shlex.quote(render.KEY)
    return (
        f'{ADDRESS_PROBE}; echo "name $(hostname)"; echo "name $(hostname -f)"; '
        f"[ -f {cert} ] && sed 's/^/cert /' {cert}; "
        f"[ -f {key} ] && [ -f {cert} ] && "
        f'[ "$(openssl x509 -noout -pubkey -in {cert} | sha256sum)" = '
        f'"$(openssl pkey -pubout -in {key} | sha256sum)" ] && echo keymatch'
    )


def parse_probe(lines: list[str]) -> tuple[list[str], str, bool]:
    """(names and addresses the guest has, its certificate PEM, whether its key matches)."""
    address = parse_host_address(lines).address
    names = [line.split(" ", 1)[1].strip() for line in lines if line.startswith("name ")]
    cert = "".join(line[5:] + "\n" for line in lines if line.startswith("cert "))
    return [*names, *([address] if address else [])], cert, "keymatch" in lines


def client_addresses(inventory, guest) -> list[str]:
    """client_api_host of each client whose editor uses ``guest``: the editor checks the door's
    certificate against it (a Vagrant host-only address, a tunnel's name)."""
    from roles.client.deployed import choose_guest  # the client imports the registry's fronts
    from roles.client.settings import ClientSettings

    found = []
    for client in inventory.get_group("clients", []):
        settings = ClientSettings.from_host(client)
        try:
            if settings.api_host and choose_guest(inventory, settings) is guest:
                found.append(settings.api_host)
        except DeployError:  # the client's own run names it
            continue
    return found


def cert_names(settings: ProxySettings, found: list[str]) -> list[str]:
    """What the server certificate names: the inventory's names for the guest, what it calls
    itself, its primary address, localhost, the clients' client_api_host and proxy_names; each
    once, in that order."""
    wanted = [host.name, host.data.get("ssh_hostname") or "", *found, "localhost", "127.0.0.1"]
    wanted += client_addresses(host.inventory, host)
    names: list[str] = []
    for name in [*wanted, *settings.names]:
        name = str(name).strip().rstrip(".")
        if re.fullmatch(checks.URL_HOST, name) and name not in names:
            names.append(name)
    return names


def _secret(state: State, name: str, path: str, content: str) -> OpResult:
    if state.files.get(path) == FileState("600", "root:root", host_state.sha1(content)):
        return UNCHANGED
    return secret_file(name=name, path=path, content=content, user="root", group="root")


def _own_cert(settings: ProxySettings) -> tuple[str, str]:
    return Path(settings.cert_file).read_text(), Path(settings.key_file).read_text()


def _certificate(settings: ProxySettings, state: State) -> list[OpResult]:
    """The server certificate and key: the user's own, else the deploy's CA's, issued anew only
    when the one on the guest will not do (pki.renewal_reason)."""
    names, cert_pem, key_matches = parse_probe(state.probe)
    if settings.own_cert:
        cert, key = _own_cert(settings)
        return [
            host_state.put(state, "server certificate (yours)", render.CERT, cert),
            _secret(state, "server key (yours)", render.KEY, key),
        ]
    ca = pki.load_or_create()
    pki.keep_operation()
    wanted = cert_names(settings, names)
    reason = pki.renewal_reason(cert_pem, ca, wanted, settings.renew_days)
    if reason is None and not key_matches:
        reason = "its key is missing or does not match it"
    if reason is None:
        host.noop(f"the server certificate is kept ({', '.join(wanted)})")
        return [UNCHANGED]
    cert, key = pki.issue(ca, wanted, settings.cert_days)
    return [
        secret_file(name="server key", path=render.KEY, content=key, user="root", group="root"),
        host_state.put(state, f"server certificate: issued, as {reason}", render.CERT, cert),
    ]


def _read_spec(settings: ProxySettings) -> dict:
    """Everything the role looks at on the guest (proxy_plain_http: what it may remove)."""
    if settings.plain_http:
        return dict(paths=[render.SITE, render.KEY], units=[render.UNIT])
    return dict(
        paths=[render.SITE, render.CERT, render.KEY, render.DEFAULT_SITE], packages=PACKAGES,
        units=[render.UNIT], probe=probe(), dirs=[render.CONF_DIR],
    )  # fmt: skip


@prefetch.reader("ai_guests")
def reads(host_) -> list[prefetch.Request]:
    """What :func:`configure` reads on ``host_``, in the deploy's one read per host."""
    return [host_state.request(**_read_spec(ProxySettings.from_host(host_)))]


@deploy("TLS front door (nginx)")
def configure():
    """Ensures nginx serves https://<guest>:<proxy_port>/<service>/ for every model server on
    the guest (tabbyAPI, Ollama), with a certificate of the deploy's private CA (kept on the
    control machine, renewed before it expires) or your own, and a 401 for any request to a
    server without one of the people's keys; only the health paths answer without one. With
    proxy_plain_http the front door is taken away and the servers answer in plain HTTP.

    Example, in your own deploy file:

    .. code:: python

        from roles import proxy

        proxy.configure()  # after the model servers; settings: proxy_* in group_data
    """
    settings = ProxySettings.from_host(host)
    os_family(host, allowed=(DEBIAN,))
    if settings.plain_http:
        _remove()
        return
    state = host_state.read(**_read_spec(settings))
    installed = host_state.packages(state, "nginx and openssl", PACKAGES)
    host_state.directory(state, "its folder", render.CONF_DIR, "700")
    certificate = _certificate(settings, state)
    keys = person_keys(settings)
    revoke_removed(host.inventory)
    secrets.keep_operation()  # generated keys reach secrets.yml before the guest accepts them
    site = _secret(
        state,
        f"site {render.SITE} (keys of {', '.join(settings.people)})",
        render.SITE,
        render.site(settings.port, routes(), keys),
    )
    default: OpResult = UNCHANGED
    if render.DEFAULT_SITE in state.files or installed is not UNCHANGED:
        default = server.shell(
            name="no default site on port 80", commands=[f"rm -f {render.DEFAULT_SITE}"]
        )
    changed = [installed, *certificate, site, default]
    host_state.after(changed, server.shell, name="nginx -t", commands=["nginx -t -q"])
    unit_lifecycle(state, "nginx", render.UNIT, UNCHANGED, True, reload_on=changed)


def _remove() -> None:
    """proxy_plain_http: the site and its keys gone, nginx reloaded; the package stays."""
    state = host_state.read(**_read_spec(ProxySettings.from_host(host)))
    there = [path for path in (render.SITE, render.KEY) if path in state.files]
    if not there:
        return
    running = state.units.get(render.UNIT, ("", ""))[1] == "active"
    reload = " && nginx -t -q && systemctl reload nginx.service" if running else ""
    server.shell(
        name="no front door (proxy_plain_http): its site and key removed",
        commands=[f"rm -f {' '.join(there)}{reload}"],
    )


def host_problems(host_) -> list[str]:
    """What the control machine must hold for this guest's front door: your certificate and
    key readable, the CA's folder usable, and keys a bearer token can carry."""
    settings = ProxySettings.from_host(host_)
    if settings.plain_http:
        return []
    problems = []
    for name in ("cert_file", "key_file", "ca_file"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            problems.append(f"{settings.key(name)}: {path} is not a file on this machine")
    if not problems and settings.own_cert:
        problems += _own_cert_problems(settings)
    if not settings.own_cert:
        try:
            pki.load_or_create()
        except pki.PkiError as error:
            problems.append(f"proxy_cert_file: {error}")
    try:
        recorded = set(secrets.file_names())  # read once: the revocation records among them
    except secrets.SecretError:  # an unusable secrets file: validation names it already
        return problems
    for person in settings.people:
        try:
            value = secrets.get(key_secret(person))
        except secrets.SecretError:
            break
        problem = None if value is None else render.key_problem(value)
        if problem:
            problems.append(
                f"proxy_people: the key of {person!r} (secret {key_secret(person)}) {problem}"
            )
        elif value is not None and revoked_record(value) in recorded:
            problems.append(
                f"proxy_people: the key of {person!r} (secret {key_secret(person)}) was revoked "
                f"when {person} left proxy_people; to give {person} a new key, delete the "
                f"{key_secret(person)} line from {secrets.secrets_file()} (the next run "
                f"generates one) or set AICODER_{key_secret(person).upper()}"
            )
    return problems


def _own_cert_problems(settings: ProxySettings) -> list[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_text, key_text = _own_cert(settings)
    try:
        cert = x509.load_pem_x509_certificate(cert_text.encode())
    except ValueError:
        return [f"proxy_cert_file: {settings.cert_file} is not a PEM certificate"]
    try:
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
    except (ValueError, TypeError):
        return [
            f"proxy_key_file: {settings.key_file} is not an unencrypted PEM private key "
            "(content not shown)"
        ]
    if Path(settings.key_file).stat().st_mode & 0o077:
        return [f"proxy_key_file: {settings.key_file} is readable by others; chmod 600 it"]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        return [f"proxy_key_file: {settings.key_file} is not the key of {settings.cert_file}"]
    return []
