"""Plan tests of the proxy role (the TLS front door) and of what follows it: the servers on
loopback, the firewall, the client. The real deploy.py on a fake Debian 12 guest."""

from __future__ import annotations

import re

import pytest
import yaml
from cryptography import x509
from guest_services_facts import LAN, responses, unit_line
from harness import file_line, package_lines, run_plan
from test_client_plan import CONFIG, ENV, run_client

from roles.common import secrets
from roles.firewall.render import NFT_FILE
from roles.proxy import pki, render
from roles.proxy.settings import ProxySettings, key_secret, revoked_record

TABBY_KEY, ADMIN_KEY = "tabby-own-key", "tabby-admin-key"
KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef"}
PEOPLE = {"proxy_people": ["alice", "bob"]}
PROXY_STATE = re.compile(r"openssl pkey -pubout.*sed 's/\^/probe /'")
GUEST_NAMES = ["@fake/planhost", "planhost", "192.168.1.20", "localhost", "127.0.0.1"]


@pytest.fixture(autouse=True)
def user_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    monkeypatch.setenv("AICODER_TABBYAPI_API_KEY", TABBY_KEY)
    monkeypatch.setenv("AICODER_TABBYAPI_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.delenv("AICODER_HF_TOKEN", raising=False)
    for person, key in KEYS.items():
        monkeypatch.setenv(f"AICODER_API_KEY_{person.upper()}", key)
    pki._NEW.clear()


def plan(data: dict | None = None, extra: dict | None = None):
    """The whole deploy on a guest with ``data``, by default a fresh one that has names."""
    extra = extra or {PROXY_STATE: ["probe route 192.168.1.20", "probe name planhost"]}
    found = run_plan({"ai_guests": {**LAN, **PEOPLE, **(data or {})}}, responses(extra))
    assert found.error is None, found.error
    return found


def converged(site: str, cert: str, key_matches: bool = True) -> dict:
    """The guest after a run: nginx running with ``site`` and the certificate ``cert``."""
    lines = [
        file_line(render.SITE, site, "600"),
        file_line(render.CERT, cert),
        f"file 600 root:root 0000 {render.KEY}",
        f"dir 700 root:root {render.CONF_DIR}",
        *package_lines(["nginx", "openssl"]),
        unit_line(render.UNIT),
        "probe route 192.168.1.20",
        "probe name planhost",
        *[f"probe cert {line}" for line in cert.splitlines()],
        *(["probe keymatch"] if key_matches else []),
    ]
    running = {"--property SubState nginx.service": "Id=nginx.service\nSubState=running"}
    return {PROXY_STATE: lines, **running}


def proxy_ops(found) -> list[str]:
    return [n for n in found.names() if n.startswith("TLS front door")]


def sans(cert_pem: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_fresh_guest_gets_nginx_a_ca_certificate_and_a_site_with_each_persons_key():
    found = plan()
    assert found.find(r"apt-get .*install.* nginx openssl")
    site = found.files[render.SITE]
    assert f'"Bearer {KEYS["alice"]}" "alice";' in site and f'"Bearer {KEYS["bob"]}" "bob";' in site
    assert "listen 8443 ssl;" in site and "return 401" in site
    # tabbyAPI gets its own key from the door; Ollama gets no Authorization at all.
    assert f'proxy_set_header Authorization "Bearer {TABBY_KEY}";' in site
    assert "proxy_pass http://127.0.0.1:5000/;" in site
    assert "proxy_pass http://127.0.0.1:11434/;" in site
    assert "location = /tabbyapi/health {" in site and "location = /ollama/api/version {" in site
    # A CA made once, kept by an operation (so --dry writes nothing), signed the certificate.
    assert "Keep the new private CA" in " ".join(found.names())
    assert (pki.ca_dir() / "ca.key").stat().st_mode & 0o777 == 0o600
    ca = pki.load_or_create()
    cert = found.files[render.CERT]
    assert pki.renewal_reason(cert, ca, GUEST_NAMES[1:], 30) is None
    assert found.files[render.KEY].startswith("-----BEGIN PRIVATE KEY-----")
    assert found.find(r"^nginx -t -q$") and found.find(r"systemctl (re)?start nginx.service")
    assert found.find(r"rm -f /etc/nginx/sites-enabled/default")


def test_every_enabled_registered_service_is_routed_and_only_those():
    site = plan({"ollama_enabled": False}).files[render.SITE]
    assert "location /tabbyapi/ {" in site and "/ollama/" not in site
    assert "proxy_pass http://127.0.0.1:5100/;" in plan({"tabbyapi_port": 5100}).files[render.SITE]


def test_no_key_shows_in_any_command_or_operation_name():
    found = plan()
    shown = " ".join(found.names() + found.commands)
    secret_keys = [*KEYS.values(), TABBY_KEY, ADMIN_KEY]
    assert not [k for k in secret_keys if k in shown]
    assert "PRIVATE KEY" not in shown


def test_the_servers_listen_on_loopback_and_the_firewall_opens_only_the_door():
    found = plan()
    assert "host: 127.0.0.1" in found.files["/etc/tabbyapi/config.yml"]
    assert "- 127.0.0.1:11434:11434" in found.files["/opt/ollama/compose.yaml"]
    rules = found.files[NFT_FILE]
    assert "tcp dport { 8443 }" in rules and "5000" not in rules and "11434" not in rules


def test_a_converged_guest_keeps_its_certificate_and_changes_nothing():
    fresh = plan()
    site, cert = fresh.files[render.SITE], fresh.files[render.CERT]
    ca = pki.load_or_create()  # kept by the first run's operation
    again = plan(extra=converged(site, cert))
    assert proxy_ops(again) == [], again.changed
    assert pki.load_or_create() == ca


def test_a_certificate_close_to_expiry_or_lacking_a_name_is_issued_anew():
    ca = pki.load_or_create()
    pki.keep()
    site = plan().files[render.SITE]
    short, _ = pki.issue(ca, GUEST_NAMES[1:], days=20)
    renewed = plan(extra=converged(site, short))
    assert "as it expires in 19 days (proxy_renew_days 30)" in " ".join(renewed.names())
    assert pki.renewal_reason(renewed.files[render.CERT], ca, GUEST_NAMES[1:], 30) is None
    # The renewal window is a setting: 10 days keeps the same certificate.
    assert proxy_ops(plan({"proxy_renew_days": 10}, converged(site, short))) == []
    narrow, _ = pki.issue(ca, ["planhost"], days=300)
    assert "does not name 192.168.1.20" in " ".join(plan(extra=converged(site, narrow)).names())
    foreign, _ = pki.issue(pki.new_ca(), GUEST_NAMES[1:], days=300)
    assert "not signed by the deploy's CA" in " ".join(plan(extra=converged(site, foreign)).names())
    good, _ = pki.issue(ca, GUEST_NAMES[1:], days=300)
    mismatched = plan(extra=converged(site, good, key_matches=False))
    assert "its key is missing or does not match it" in " ".join(mismatched.names())
    assert render.KEY in mismatched.files


def test_a_removed_person_is_left_out_of_the_site_at_the_next_run():
    fresh = plan()
    site, cert = fresh.files[render.SITE], fresh.files[render.CERT]
    pki.keep()
    found = plan({"proxy_people": ["alice"]}, converged(site, cert))
    new_site = found.files[render.SITE]
    assert KEYS["alice"] in new_site and KEYS["bob"] not in new_site
    assert found.find(r"systemctl reload nginx.service")
    assert render.CERT not in found.files  # the certificate is kept


def test_a_revoked_key_never_comes_back_when_its_person_is_added_again(monkeypatch):
    """Removing bob revokes his key for good: adding him again is refused (naming the fix)
    until his old key's line is gone, and then he gets a new one."""
    monkeypatch.delenv("AICODER_API_KEY_BOB")
    fresh = plan()
    secrets.keep()
    old = secrets.get(key_secret("bob"))
    assert old and old in fresh.files[render.SITE]
    site, cert = fresh.files[render.SITE], fresh.files[render.CERT]
    removed = plan({"proxy_people": ["alice"]}, converged(site, cert))
    assert any(revoked_record(old) in name for name in removed.names())
    secrets.keep()
    text = secrets.secrets_file().read_text()
    assert f"{revoked_record(old)}: 'bob'" in text and text.count(old) == 1  # the record: a hash
    later = plan({"proxy_people": ["alice"]}, converged(removed.files[render.SITE], cert))
    assert not [name for name in later.names() if "revoked_key_" in name]  # recorded once

    again = run_plan({"ai_guests": {**LAN, **PEOPLE}}, responses())
    message = str(again.error)
    assert "the key of 'bob' (secret api_key_bob) was revoked" in message, message
    assert "delete the api_key_bob line" in message and old not in message
    assert again.operations == 0

    path = secrets.secrets_file()
    path.write_text(
        "".join(line for line in text.splitlines(True) if not line.startswith("api_key_bob:"))
    )
    readded = plan()
    new, site = secrets.get(key_secret("bob")), readded.files[render.SITE]
    assert new and new != old and new in site and old not in site


def test_a_key_too_long_for_nginxs_map_is_refused_before_anything(monkeypatch):
    """nginx refuses a map key longer than its hash bucket ("could not build map_hash" from 232
    characters on): the deploy wrote the site, then failed at nginx -t, and the site left in
    conf.d kept nginx from starting at the next boot."""
    monkeypatch.setenv("AICODER_API_KEY_BOB", "b" * 240)
    found = run_plan({"ai_guests": {**LAN, **PEOPLE}}, responses())
    message = str(found.error)
    assert "the key of 'bob' (secret api_key_bob) is 240 characters long" in message, message
    assert "b" * 240 not in message and found.operations == 0


def test_your_own_certificate_and_key_are_uploaded_and_no_ca_is_made(tmp_path):
    ca = pki.new_ca()
    cert, key = pki.issue(ca, ["ai.example.lan"], days=90)
    (tmp_path / "server.crt").write_text(cert)
    (tmp_path / "server.key").write_text(key)
    (tmp_path / "server.key").chmod(0o600)
    own = {"proxy_cert_file": str(tmp_path / "server.crt"),
           "proxy_key_file": str(tmp_path / "server.key")}  # fmt: skip
    found = plan(own)
    assert found.files[render.CERT] == cert and found.files[render.KEY] == key
    assert not pki._NEW and not pki.ca_dir().exists()
    assert "Keep the new private CA" not in " ".join(found.names())


def test_a_bad_own_certificate_is_refused_before_anything(tmp_path):
    (tmp_path / "server.crt").write_text("not a certificate")
    (tmp_path / "server.key").write_text("x")
    bad = {"proxy_cert_file": str(tmp_path / "server.crt"),
           "proxy_key_file": str(tmp_path / "server.key")}  # fmt: skip
    found = run_plan({"ai_guests": {**LAN, **bad}}, responses())
    assert "is not a PEM certificate" in str(found.error) and found.changed == []
    missing = {"proxy_cert_file": str(tmp_path / "nope.crt")}
    found = run_plan({"ai_guests": {**LAN, **missing}}, responses())
    assert "proxy_key_file" in str(found.error) and found.changed == []


def test_plain_http_opt_out_has_no_door_and_the_servers_on_their_ports():
    found = plan({"proxy_plain_http": True})
    assert render.SITE not in found.files and not found.find(r"install.* nginx")
    assert "host: 0.0.0.0" in found.files["/etc/tabbyapi/config.yml"]
    assert "tcp dport { 5000, 11434 }" in found.files[NFT_FILE]
    assert not pki._NEW  # no CA made for nothing
    # Turned off on a guest that had the door: its site and key go, nginx reloads.
    state = [file_line(render.SITE, "x", "600"), f"file 600 root:root 00 {render.KEY}",
             unit_line(render.UNIT)]  # fmt: skip
    gone = plan({"proxy_plain_http": True}, {re.compile(r"/etc/nginx/conf.d/aicoder.conf"): state})
    [remove] = gone.find(rf"rm -f {render.SITE} {render.KEY}")
    assert remove.endswith("nginx -t -q && systemctl reload nginx.service")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"proxy_renew_days": 365}, "proxy_renew_days: 365 is not less than proxy_cert_days"),
        ({"proxy_people": []}, "proxy_people: is empty"),
        ({"proxy_people": ["Alice"]}, "proxy_people"),
        ({"proxy_port": 22}, "proxy_port: 22 is the SSH port"),
        ({"proxy_cert_file": "/x.crt"}, "proxy_key_file: proxy_cert_file and proxy_key_file"),
    ],
)
def test_bad_proxy_settings_are_refused_naming_the_key(data, fragment):
    found = run_plan({"ai_guests": {**LAN, **data}}, responses())
    assert fragment in str(found.error) and found.changed == []


# --- the client behind the front door ------------------------------------------------------


def guest(**data):
    return {"guest": {"ssh_hostname": "192.168.1.50", **PEOPLE, **data}}


def test_the_client_config_uses_https_the_ca_beside_it_and_the_persons_key():
    found = run_client(guests=guest(), client_data={"client_person": "bob"})
    assert found.error is None, found.error
    config = yaml.safe_load(found.files[CONFIG])
    ca_path = CONFIG.rsplit("/", 1)[0] + "/aicoder-ca.crt"
    by_provider = {m["provider"]: m for m in config["models"]}
    assert by_provider["openai"]["apiBase"] == "https://192.168.1.50:8443/tabbyapi/v1"
    assert by_provider["ollama"]["apiBase"] == "https://192.168.1.50:8443/ollama/"
    for model in config["models"]:
        assert model["apiKey"] == "${{ secrets.API_KEY_BOB }}"  # the person's key, in .env
        assert model["requestOptions"] == {"caBundlePath": ca_path}
    assert found.files[ca_path] == pki.load_or_create().cert_pem
    assert "PRIVATE KEY" not in found.files[ca_path]
    (write,) = found.find(r"API_KEY_BOB=")
    assert "*MASKED*" in write and KEYS["bob"] not in " ".join(found.commands)
    assert found.names()[-1].endswith(f"key in {ENV}")  # one line: every server takes it


def test_the_client_person_must_be_one_of_the_guests_people():
    found = run_client(guests=guest(), client_data={"client_person": "carol"})
    assert "client_person: 'carol' is not in @fake/guest's proxy_people" in str(found.error)
    assert found.changed == []


def test_front_door_configs_pass_continues_schema(tmp_path):
    from continue_validator import validate

    found = run_client(guests=guest())
    assert found.error is None, found.error
    path = tmp_path / "config.yaml"
    path.write_text(found.files[CONFIG])
    code, messages = validate(path)
    assert code == 0, messages


def test_defaults_are_valid():
    settings, problems = ProxySettings.problems_in({})
    assert problems == [] and settings is not None and not settings.plain_http
