"""The TLS front door (roles/proxy) on the shared lab guest, seen from this machine as the editor
sees it: the handshake against the deploy's CA, a person's key at the door of tabbyAPI (really
running) and of the Ollama route, a removed person refused after the next run and when added
again, the certificate kept and renewed by its window, the servers reachable through the door
only, and no key in any output, log or file another user can read."""

from __future__ import annotations

import json
import shlex
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from deploy_run import pyinfra_deploy

from roles.common import secrets
from roles.proxy import pki, render
from roles.proxy.settings import ProxySettings, key_secret

pytestmark = pytest.mark.lab

PORT = ProxySettings().port
ME = ProxySettings().people[0]  # the default person
STUB = "aicoder-ollama-stub"  # stands in for Ollama, whose image the lab cannot have
# Answers every request with whether an Authorization header reached it.
STUB_CODE = (
    "import http.server as h\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = ('auth=' + ('yes' if self.headers.get('Authorization') else 'no')).encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "h.HTTPServer(('127.0.0.1', 11434), H).serve_forever()\n"
)


def guest_address(lab) -> str:
    scope: dict = {}
    exec(lab.inventory.read_text(), scope)
    return scope["ai_guests"][0][1]["ssh_hostname"]


def ca_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_dir() / "ca.crt"))


def request(lab, path: str, key: str | None = None) -> tuple[int, str]:
    """(status, body) of GET https://<guest>:<port><path>, trusting the deploy's CA."""
    url = f"https://{guest_address(lab)}:{PORT}{path}"
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=20, context=ca_context()) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def served_certificate(lab) -> x509.Certificate:
    """The certificate the door presents (checked against the CA on the way)."""
    address = guest_address(lab)
    with (
        socket.create_connection((address, PORT), timeout=10) as raw,
        ca_context().wrap_socket(raw, server_hostname=address) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def forget(person: str) -> None:
    """Delete ``person``'s key from the secrets file, as README says to before adding a removed
    person again (the file keeps its mode)."""
    path = secrets.secrets_file()
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(x for x in lines if not x.startswith(f"{key_secret(person)}:")))


def deploy(lab, lab_timings, label: str, *data: str):
    args = [arg for item in data for arg in ("--data", item)]
    started = time.monotonic()
    run = pyinfra_deploy(lab.inventory, *args)
    lab_timings[label] = time.monotonic() - started
    assert run.ok, run.tail()
    return run


@pytest.fixture(scope="module")
def runs(deployed, deploys, lab_timings):
    """Every pyinfra run of the lab so far and the two of this module: bob added with a
    renewal window wider than the certificate's life left, then the defaults again."""
    first = served_certificate(deployed)
    forget("bob")  # an earlier run of this module revoked bob's key: give him a new one
    widened = deploy(
        deployed, lab_timings, "front door: bob added, certificate renewed",
        'proxy_people=["me","bob"]', "proxy_cert_days=400", "proxy_renew_days=366",
    )  # fmt: skip
    bob = secrets.get(key_secret("bob"))
    assert bob, "the run with bob left no key for him in the secrets"
    renewed = served_certificate(deployed)
    with_bob = request(deployed, "/tabbyapi/v1/models", bob)[0]
    back = deploy(deployed, lab_timings, "front door: bob removed")
    return {
        "deploys": [*filter(None, deploys), widened, back],
        "widened": widened,
        "back": back,
        "first": first,
        "renewed": renewed,
        "after": served_certificate(deployed),
        "bob": bob,
        "with_bob": with_bob,
    }


def test_the_handshake_verifies_against_the_deploys_ca_and_fails_without_it(deployed):
    cert = served_certificate(deployed)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert guest_address(deployed) in {str(n.value) for n in names}
    address = guest_address(deployed)
    with (
        socket.create_connection((address, PORT), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=address)
    mode = (pki.ca_dir() / "ca.key").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


def test_tabbyapi_through_the_door_takes_a_persons_key_only(deployed):
    if deployed.ssh("guest", "systemctl is-active tabbyapi.service", check=False).returncode:
        pytest.skip("tabbyAPI does not run in this lab (no source mirror): see test_guest_services")
    me = secrets.get(key_secret(ME))
    assert me
    assert request(deployed, "/tabbyapi/health")[0] == 200  # the health path needs no key
    assert request(deployed, "/tabbyapi/v1/models")[0] == 401
    assert request(deployed, "/tabbyapi/v1/models", "wrong")[0] == 401
    # tabbyAPI's own key is not a person's: the door does not take it.
    assert request(deployed, "/tabbyapi/v1/models", secrets.get("tabbyapi_api_key"))[0] == 401
    status, body = request(deployed, "/tabbyapi/v1/models", me)
    assert status == 200 and "data" in json.loads(body)
    assert request(deployed, "/health")[0] == 200 and request(deployed, "/nothing", me)[0] == 404


def test_the_ollama_route_takes_a_persons_key_and_passes_none_on(deployed):
    """Ollama's image is out of the lab's reach: a stub on its loopback port stands in."""
    deployed.ssh("guest", f"systemd-run --unit {STUB} python3 -c {shlex.quote(STUB_CODE)}")
    try:
        deployed.ssh("guest", "for i in $(seq 50); do ss -ltn | grep -q 127.0.0.1:11434 && "
                     "break; sleep 0.1; done")  # fmt: skip
        me = secrets.get(key_secret(ME))
        assert request(deployed, "/ollama/api/tags")[0] == 401
        assert request(deployed, "/ollama/api/tags", "wrong")[0] == 401
        assert request(deployed, "/ollama/api/tags", me) == (200, "auth=no")
        assert request(deployed, "/ollama/api/version") == (200, "auth=no")  # health: open
    finally:
        deployed.ssh("guest", f"systemctl stop {STUB}", check=False)


def test_the_servers_answer_only_through_the_door(deployed):
    address = guest_address(deployed)
    listening = deployed.ssh("guest", "ss -ltnH").stdout
    for port in (5000, 11434):
        local = {line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(
            f":{port}")}  # fmt: skip
        assert local <= {f"127.0.0.1:{port}"}, local
        with socket.socket() as sock:
            sock.settimeout(3)
            assert sock.connect_ex((address, port)) != 0, port
    with socket.create_connection((address, PORT), timeout=5):
        pass


def test_the_certificate_is_kept_by_a_rerun_and_renewed_by_its_window(deploys, runs):
    _, second = deploys
    assert second is not None
    door = [n for n in second.changed_operations() if n.startswith("TLS front door")]
    assert door == [], door  # the immediate re-run: 0 changes, the same certificate
    assert runs["renewed"].serial_number != runs["first"].serial_number
    left = runs["renewed"].not_valid_after_utc - runs["first"].not_valid_after_utc
    assert left.days >= 30  # 400 days instead of 365
    issued = [n for n in runs["widened"].changed_operations() if "issued" in n]
    assert issued, runs["widened"].changed_operations()
    # Back to a 30-day window: the 400-day certificate is kept.
    assert runs["after"].serial_number == runs["renewed"].serial_number
    assert not [n for n in runs["back"].changed_operations() if "issued" in n]


def test_a_removed_persons_key_is_refused_after_the_next_run(deployed, runs):
    # Let in: tabbyAPI's answer, or 502 from the door where tabbyAPI does not run in this lab.
    assert runs["with_bob"] in (200, 502)
    assert request(deployed, "/tabbyapi/v1/models", runs["bob"])[0] == 401
    assert request(deployed, "/ollama/api/tags", runs["bob"])[0] == 401


def test_a_removed_person_added_again_is_refused_until_the_old_key_is_deleted(deployed, runs):
    """bob's removal recorded his key as revoked: the run adding him back refuses before any
    change, naming the fix, and his old key still gets 401."""
    again = pyinfra_deploy(deployed.inventory, "--data", 'proxy_people=["me","bob"]')
    assert not again.ok and "(secret api_key_bob) was revoked" in again.output, again.tail()
    assert "delete the api_key_bob line" in again.output and runs["bob"] not in again.output
    assert "nothing was changed" in again.output and "--> Results:" not in again.output
    assert request(deployed, "/tabbyapi/v1/models", runs["bob"])[0] == 401


def test_no_key_in_any_output_log_or_file_another_user_can_read(deployed, runs):
    keys = {
        "me": secrets.get(key_secret(ME)),
        "bob": runs["bob"],
        "tabbyapi": secrets.get("tabbyapi_api_key"),
        "tabbyapi admin": secrets.get("tabbyapi_admin_key"),
    }
    ca_key = (pki.ca_dir() / "ca.key").read_text()
    server_key = deployed.ssh("guest", f"cat {render.KEY}").stdout
    bodies = {  # the base64 lines of the private keys, as any output could show them
        "CA key": [line for line in ca_key.splitlines() if "-----" not in line],
        "server key": [line for line in server_key.splitlines() if "-----" not in line],
    }
    assert all(keys.values()) and all(bodies.values())
    for run in runs["deploys"]:
        shown = [name for name, key in keys.items() if key in run.output]
        shown += [name for name, lines in bodies.items() if any(b in run.output for b in lines)]
        assert shown == [], f"pyinfra's output shows {shown}"
    # The door's files: root only. The access log names the person, never the key.
    modes = deployed.ssh("guest", f"stat -c '%a %U %n' {render.SITE} {render.KEY} "
                         f"{render.CONF_DIR}").stdout.split("\n")  # fmt: skip
    assert [m.split()[:2] for m in modes if m] == [["600", "root"]] * 2 + [["700", "root"]]
    log = deployed.ssh("guest", "cat /var/log/nginx/aicoder-access.log").stdout
    assert f"person={ME}" in log and not [k for k in keys.values() if k in log]
    # Another user finds none of the keys the guest holds anywhere they can read there: root
    # pipes them (the site's and the server key's lines) to that user's grep, never into a
    # file or a command line.
    deployed.ssh("guest", "useradd -m keyhunter")
    try:
        keys_on_guest = (
            f'{{ sed -n \'s/.*"Bearer \\([^" ][^"]*\\)".*/\\1/p\' {render.SITE}; '
            f"grep -v -- ----- {render.KEY}; }}"
        )
        counted = deployed.ssh("guest", f"{keys_on_guest} | wc -l").stdout.strip()
        assert int(counted) >= 3, counted  # me's key, tabbyAPI's, the server key's lines
        found = deployed.ssh(
            "guest",
            f"{keys_on_guest} | grep . | runuser -u keyhunter -- grep -rlsF -D skip -f - /etc /var "
            "/opt /srv /home /tmp /run /root; true",
            timeout=300,
        ).stdout.split()
        assert found == [], found
    finally:
        deployed.ssh("guest", "userdel -r keyhunter", check=False)
    # bob's key left the guest with him (the command never fails, so it is never shown).
    left = deployed.ssh("guest", f"grep -rlsF -e {runs['bob']} /etc /var /opt; true").stdout
    assert left.split() == [], left
