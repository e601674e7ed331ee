"""Settings of the proxy role (AI guest): the TLS front door, its certificate, the people's keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from typing_extensions import override

from roles.common import checks
from roles.common.ports import ssh_port_clash
from roles.common.settings import RoleSettings, setting

PERSON = r"[a-z][a-z0-9_]{0,31}"


KEY_PREFIX = "api_key_"
REVOKED_PREFIX = "revoked_key_"


def key_secret(person: str) -> str:
    """The secret holding ``person``'s key (secrets.yml, or AICODER_API_KEY_<PERSON>)."""
    return KEY_PREFIX + person


def revoked_record(key: str) -> str:
    """The secrets file's record that ``key`` was revoked: a name from its SHA-256, never the
    key itself."""
    return REVOKED_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def local_file(value: str) -> str | None:
    """A file on the control machine: absolute, or relative to the folder pyinfra runs in."""
    return checks.control_character(value) or checks.non_ascii(value)


@dataclass(frozen=True)
class ProxySettings(RoleSettings):
    PREFIX = "proxy"
    GROUPS = ("ai_guests",)

    plain_http: bool = setting(
        False,
        "opt out of the TLS front door: the model servers listen as their own settings say, in "
        "plain HTTP (tabbyAPI with its one key, Ollama without any); only for a network you trust",
    )
    port: int = setting(
        8443,
        "TCP port of the TLS front door (nginx): https://<guest>:<port>/<service>/ reaches each "
        "model server, which itself listens on 127.0.0.1 only",
        checks.port,
    )
    people: list[str] = setting(
        ["me"],
        "the people (or machines) that use the server: each gets its own key (secret "
        "api_key_<name>, generated once into secrets.yml, or AICODER_API_KEY_<NAME>); removing "
        "a name revokes that key at the next run, for good",
        checks.matches(PERSON, "a name of lower-case letters, digits and _, like alice"),
    )
    names: list[str] = setting(
        [],
        "more DNS names or IP addresses the server certificate covers, besides the guest's "
        "inventory name, ssh_hostname, host name, primary address, localhost and the "
        "client_api_host of the clients that use it",
        checks.matches(checks.URL_HOST, "a DNS name or an IP address"),
    )
    cert_days: int = setting(
        365, "lifetime in days of the server certificate the deploy issues", checks.in_range(2, 825)
    )
    renew_days: int = setting(
        30,
        "the deploy issues a new server certificate when the current one expires within this "
        "many days (less than proxy_cert_days)",
        checks.in_range(0, 824),
    )
    cert_file: str = setting(
        "",
        "your own server certificate (PEM, leaf first, then its chain) on the control machine; "
        "empty: one from the deploy's private CA (aicoder-ca/ beside secrets.yml)",
        local_file,
    )
    key_file: str = setting(
        "",
        "the key of proxy_cert_file (PEM, on the control machine, mode 0600)",
        local_file,
    )
    ca_file: str = setting(
        "",
        "with proxy_cert_file: the CA certificate the editor should trust (written beside the "
        "Continue config); empty: the system's trust store",
        local_file,
    )

    @property
    def own_cert(self) -> bool:
        return bool(self.cert_file)

    @override
    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.plain_http:
            return problems
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(
                (self.key("key_file"), "proxy_cert_file and proxy_key_file go together: set both")
            )
        if self.ca_file and not self.cert_file:
            problems.append((self.key("ca_file"), "is only used with proxy_cert_file; leave empty"))
        if self.renew_days >= self.cert_days:
            problems.append(
                (
                    self.key("renew_days"),
                    f"{self.renew_days} is not less than proxy_cert_days ({self.cert_days}): "
                    "every run would issue a new certificate",
                )
            )
        if not self.people:
            problems.append((self.key("people"), "is empty: nobody could use the server"))
        if len(set(self.people)) != len(self.people):
            problems.append((self.key("people"), "lists a name twice"))
        return problems

    @classmethod
    @override
    def problems_in(cls, data):
        """Also refuse the SSH port as the proxy's port."""
        settings, problems = super().problems_in(data)
        if settings is None or problems or settings.plain_http:
            return settings, problems
        return settings, problems + ssh_port_clash(cls.key("port"), settings.port, data)


def proxied(host) -> bool:
    """Whether the AI guest ``host`` serves its models through the TLS front door."""
    return "ai_guests" in host.groups and not ProxySettings.from_host(host).plain_http
