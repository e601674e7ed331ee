"""The proxy role's pure parts: the private CA and certificates, the nginx site, the registry's
front, the settings."""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509

from roles.common import registry
from roles.proxy import pki, render
from roles.proxy.front import front
from roles.proxy.settings import ProxySettings

NAMES = ["guest", "10.0.0.7", "localhost"]


@pytest.fixture(autouse=True)
def secrets_here(monkeypatch, tmp_path):
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    pki._NEW.clear()


def test_a_new_ca_is_kept_in_memory_until_kept_then_written_0600_and_reused():
    ca = pki.load_or_create()
    assert pki.load_or_create() is ca and not pki.ca_dir().exists()  # --dry writes nothing
    pki.keep()
    key = pki.ca_dir() / "ca.key"
    assert key.stat().st_mode & 0o777 == 0o600 and pki.ca_dir().stat().st_mode & 0o777 == 0o700
    pki._NEW.clear()
    assert pki.load_or_create() == ca  # the next run reads the same CA
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert "PRIVATE" not in ca.cert_pem


def test_a_ca_key_readable_by_others_or_half_a_ca_is_refused():
    pki.load_or_create()
    pki.keep()
    key = pki.ca_dir() / "ca.key"
    key.chmod(0o644)
    with pytest.raises(pki.PkiError, match="chmod 600"):
        pki.load_or_create()
    key.unlink()
    with pytest.raises(pki.PkiError, match="only one of ca.crt and ca.key"):
        pki.load_or_create()


def test_issued_certificates_name_the_guest_chain_to_the_ca_and_end_when_asked():
    ca = pki.new_ca()
    cert_pem, key_pem = pki.issue(ca, NAMES, days=90)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(ca.cert)
    assert cert_pem.endswith(ca.cert_pem)  # the chain nginx serves
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert 89 <= left.days <= 90 and key_pem.startswith("-----BEGIN PRIVATE KEY")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in san} == set(NAMES)
    assert pki.renewal_reason(cert_pem, ca, NAMES, renew_days=30) is None


@pytest.mark.parametrize(
    ("names", "days", "renew", "reason"),
    [
        (NAMES, 20, 30, "it expires in 19 days (proxy_renew_days 30)"),
        (["guest"], 90, 30, "it does not name 10.0.0.7, localhost"),
    ],
)
def test_renewal_reasons(names, days, renew, reason):
    ca = pki.new_ca()
    cert, _ = pki.issue(ca, names, days=days)
    assert pki.renewal_reason(cert, ca, NAMES, renew) == reason
    assert pki.renewal_reason(cert, pki.new_ca(), NAMES, 0) == (
        "the one on the guest is not signed by the deploy's CA"
    )
    assert pki.renewal_reason("", ca, NAMES, 0) == "there is none yet"


def test_the_site_maps_keys_to_people_and_refuses_keys_that_would_be_syntax():
    route = render.Route("tabbyapi", 5000, ("/health",), "own-key")
    site = render.site(8443, [route], {"bob": "k2", "alice": "k1"})
    assert site.index('"Bearer k1" "alice";') < site.index('"Bearer k2" "bob";')
    assert "$http_authorization" in site and "person=$aicoder_person" in site
    # The header is read by the map only: never logged, never passed on.
    assert [line for line in site.splitlines() if "http_authorization" in line] == [
        "map $http_authorization $aicoder_person {"
    ]
    for bad in ('a"b', "a$b", "a b", "a;b", "a}b"):
        with pytest.raises(ValueError, match="'alice'"):
            render.site(8443, [route], {"alice": bad})
        with pytest.raises(ValueError, match="tabbyapi's own key"):
            render.site(8443, [render.Route("tabbyapi", 5000, (), bad)], {"alice": "k"})
    # A person's key is a key of the map, whose hash bucket holds 231 characters at most.
    with pytest.raises(ValueError, match="'alice' is 201 characters long"):
        render.site(8443, [route], {"alice": "k" * (render.MAX_KEY + 1)})
    assert "k" * render.MAX_KEY in render.site(8443, [route], {"alice": "k" * render.MAX_KEY})


def test_no_other_key_header_reaches_the_server_behind_the_door():
    """tabbyAPI checks X-Api-Key before Authorization (common/auth.py check_api_key) and
    Continue's OpenAI adapter sends the person's key in it as well as in Authorization
    (openai-adapters OpenAIApi.getHeaders): passed on, tabbyAPI refused the door's requests."""
    routes = [render.Route("tabbyapi", 5000, ("/health",), "own-key"), render.Route("ollama", 1)]
    site = render.site(8443, routes, {"alice": "k1"})
    locations = site.split("location ")[1:]
    proxied = [block for block in locations if "proxy_pass" in block]
    assert len(proxied) == 3  # tabbyAPI's health and API, Ollama's API
    for block in proxied:  # a location's own proxy_set_header drops the server's
        for header in ("Authorization", "X-Api-Key", "Api-Key"):
            assert re.search(rf"proxy_set_header {header} ", block), (header, block)
    assert 'proxy_set_header Authorization "Bearer own-key";' in proxied[1]


def settings_of(data: dict):
    def of(cls):
        settings, problems = cls.problems_in(data)
        assert not problems, problems
        return settings

    return of


def test_the_front_publishes_each_service_under_its_name_on_the_doors_port():
    tabby, ollama = registry.endpoints(settings_of({"proxy_people": ["ann"]}), ("ai_guests",))
    assert tabby.base_url("guest") == "https://guest:8443/tabbyapi/v1"
    assert ollama.base_url("guest") == "https://guest:8443/ollama/"
    assert ollama.base_url("g", ollama.health_path) == "https://g:8443/ollama/api/version"
    assert (tabby.auth, tabby.key_secret, ollama.auth) == ("bearer", "api_key_ann", "bearer")
    assert (tabby.own.port, tabby.own.scheme, ollama.own.auth) == (5000, "http", "none")
    plain = settings_of({"proxy_plain_http": True})
    assert front(tabby.own, plain) is tabby.own


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"proxy_renew_days": 400}, "not less than proxy_cert_days"),
        ({"proxy_people": ["a", "a"]}, "lists a name twice"),
        ({"proxy_people": ["Bob"]}, "lower-case"),
        ({"proxy_ca_file": "/ca.crt"}, "only used with proxy_cert_file"),
        ({"proxy_names": ["bad name"]}, "a DNS name or an IP address"),
    ],
)
def test_bad_settings_name_the_key(data, fragment):
    _, problems = ProxySettings.problems_in(data)
    assert any(fragment in why for _, why in problems), problems


def _inventory(clients: list[tuple[str, dict]], guests: list[str]):
    from pyinfra.api import Inventory

    hosts = [name for name, _ in clients] + guests
    return Inventory((hosts, {}), clients=(clients, {}), ai_guests=(guests, {}))


def test_the_certificate_names_the_address_each_client_reaches_its_guest_at():
    """The Vagrant guest's editor uses the host-only address, not the guest's primary one: a
    certificate without it fails the editor's TLS check."""
    from roles.proxy import client_addresses

    inventory = _inventory([("@local", {"client_api_host": "192.168.56.11"})], ["guest"])
    assert client_addresses(inventory, inventory.get_host("guest")) == ["192.168.56.11"]
    # Two guests: only the one a client names (client_guest) gets that client's address.
    inventory = _inventory(
        [("laptop", {"client_api_host": "gpu.example", "client_guest": "b"}), ("desk", {})],
        ["a", "b"],
    )
    assert client_addresses(inventory, inventory.get_host("a")) == []
    assert client_addresses(inventory, inventory.get_host("b")) == ["gpu.example"]


def test_a_guest_name_longer_than_a_common_name_is_still_certified():
    """A DNS name may be 253 characters, a commonName 64 (cryptography refused to build the
    certificate): the long name goes to the SAN, the subject takes the first that fits."""
    long = ".".join(["a" * 60, "b" * 60, "example", "org"])
    cert_pem, _ = pki.issue(pki.new_ca(), [long, "localhost"], days=30)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert long in san.get_values_for_type(x509.DNSName)
    assert cert.subject.rfc4514_string() == "CN=localhost"
    assert pki.renewal_reason(cert_pem, None, [long, "localhost"], renew_days=1) is None
