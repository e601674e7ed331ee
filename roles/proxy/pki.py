"""The deploy's private CA and the server certificates it issues (python ``cryptography``).

The CA lives on the control machine, in ``aicoder-ca/`` beside the secrets file (key 0600): the
machine that already holds every other secret and writes the editor's config, which needs the
CA certificate. A guest that is broken into cannot sign certificates for other names with it.
Like a generated secret, a new CA is kept in memory until an operation writes it (``keep``):
``--dry`` and a refused run write nothing. Nothing here ever logs a private key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import python

from roles.common import secrets

CA_DAYS = 3650
CA_NAME = "ai-coding-server private CA"
CN_MAX = 64  # RFC 5280's upper bound of a commonName; a DNS name may be up to 253 characters
_NEW: dict[str, CA] = {}  # CA folder -> a CA created this run, not yet written


class PkiError(PyinfraError):
    """The CA files are unusable (named by path, never shown)."""


@dataclass(frozen=True)
class CA:
    cert_pem: str
    key_pem: str  # never logged or printed

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def ca_dir() -> Path:
    """Where the CA is kept: ``aicoder-ca/`` beside the secrets file."""
    return secrets.secrets_file().parent / "aicoder-ca"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def new_ca() -> CA:
    """A self-signed CA (P-256), allowed to sign server certificates only (pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return CA(_pem_cert(cert), _pem_key(key))


def load_or_create() -> CA:
    """The kept CA, or one created now and written by ``keep_operation``'s operation."""
    folder = ca_dir()
    if str(folder) in _NEW:
        return _NEW[str(folder)]
    cert, key = folder / "ca.crt", folder / "ca.key"
    if cert.exists() or key.exists():
        if not (cert.exists() and key.exists()):
            raise PkiError(f"{folder} holds only one of ca.crt and ca.key; restore the other")
        mode = key.stat().st_mode & 0o777
        if mode & 0o077:
            raise PkiError(f"{key} is readable by other users; fix it with: chmod 600 {key}")
        try:
            ca = CA(cert.read_text(), key.read_text())
            ca.cert, ca.key  # noqa: B018 (parse both now: a broken file fails here)
        except (ValueError, AssertionError):
            raise PkiError(
                f"{folder}: ca.crt or ca.key is not a PEM EC CA (content not shown)"
            ) from None
        return ca
    _NEW[str(folder)] = ca = new_ca()
    return ca


def keep() -> None:
    """Write the CA created this run: key 0600 first, then the certificate, each atomically."""
    folder = ca_dir()
    ca = _NEW.get(str(folder))
    if ca is None or (folder / "ca.key").exists():
        return
    folder.mkdir(mode=0o700, exist_ok=True)
    for name, content, mode in (("ca.key", ca.key_pem, 0o600), ("ca.crt", ca.cert_pem, 0o644)):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _NEW.pop(str(folder))


def keep_operation() -> None:
    """Plan the operation that writes a CA created this run (none if the CA is kept already)."""
    if str(ca_dir()) in _NEW:
        python.call(name=f"Keep the new private CA in {ca_dir()} (key 0600)", function=keep)


def san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(ca: CA, names: list[str], days: int) -> tuple[str, str]:
    """(certificate PEM with the CA appended, key PEM) of a server certificate for ``names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # Clients check the names in the SAN only; the subject just needs a name that fits.
    common = next((name for name in names if len(name) <= CN_MAX), "ai-coding-server")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return _pem_cert(cert) + ca.cert_pem, _pem_key(key)


def renewal_reason(cert_pem: str, ca: CA | None, names: list[str], renew_days: int) -> str | None:
    """Why the server certificate ``cert_pem`` must be issued anew (None: it is kept):
    missing, unreadable, not signed by ``ca`` (when given), missing one of ``names``, or
    expiring within ``renew_days``."""
    if not cert_pem.strip():
        return "there is none yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "the one on the guest is unreadable"
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            return "the one on the guest is not signed by the deploy's CA"
    try:
        have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        have = set()
    lacking = [n for n in names if san(n) not in have]
    if lacking:
        return f"it does not name {', '.join(lacking)}"
    left = cert.not_valid_after_utc - _now()
    if left < datetime.timedelta(days=renew_days):
        return f"it expires in {left.days} days (proxy_renew_days {renew_days})"
    return None
