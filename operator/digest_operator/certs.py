"""The admission webhook's TLS material: a private CA, serving certificates, and where they are kept.

Three sources, chosen by the settings (see `source`):

- `SecretCerts` (`DIGEST_OPERATOR_WEBHOOK_CERT_SECRET`): the operator's own CA and serving certificate in one Secret
  that every replica shares. The installation ships the Secret empty; the first replica fills it, guarded by the
  Secret's `resourceVersion`, so exactly one CA is ever made and a replica that loses the race reads the winner's.
  Keys: `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
- `MountedCerts` (`DIGEST_OPERATOR_WEBHOOK_CERT_DIR`): `tls.crt`, `tls.key` and optionally `ca.crt` from a directory,
  e.g. a mounted cert-manager Secret (cert-manager renews; the files are re-read).
- `LocalCerts` (neither): a CA and a certificate made by this process (one replica: development, tests).

Renewal (`Lifetime`, `renewal_due`): a serving certificate lives a year and is reissued by the same CA when less
than a third of its validity is left (about four months before its end); the CA lives ten years and is replaced
when less than a tenth is left. The admission webhook server asks its source every `webhook_refresh_seconds`, so a
running operator renews without a restart.

The pure parts (`renewal_due`, `renewed`, `merge_ca_bundle`, `from_secret_data`, ...) decide; the sources only read
and write.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from digest_operator.k8s import ApiError, resource_path

logger = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
"""Lifetime of a serving certificate."""
RENEW_FRACTION = 1 / 3
"""A serving certificate is renewed when less than this part of its validity is left (cert-manager's default)."""
CA_VALIDITY = datetime.timedelta(days=3650)
CA_RENEW_FRACTION = 1 / 10
BACKDATE = datetime.timedelta(minutes=5)
"""notBefore lies this far in the past (clock skew between replicas and the API server), at most a tenth of the
validity."""
CA_NAME = "digest-operator webhook CA"
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Lifetime:
    """How long certificates live and when they are renewed (shorter only in tests)."""

    validity: datetime.timedelta = VALIDITY
    renew_fraction: float = RENEW_FRACTION
    ca_validity: datetime.timedelta = CA_VALIDITY
    ca_renew_fraction: float = CA_RENEW_FRACTION


DEFAULT_LIFETIME = Lifetime()


def renewal_due(not_before: datetime.datetime, not_after: datetime.datetime, now: datetime.datetime,
                fraction: float) -> bool:
    """Is less than `fraction` of the validity [not_before, not_after] left at `now` (or is `now` outside it)?"""
    if not (0 < fraction < 1):
        raise ValueError(f"the renewal fraction must lie between 0 and 1, not {fraction}")
    if now < not_before:
        return True
    return not_after - now < (not_after - not_before) * fraction


def _backdated(now: datetime.datetime, validity: datetime.timedelta) -> datetime.datetime:
    return now - min(BACKDATE, validity / 10)


class CertError(Exception):
    """The webhook's certificates cannot be obtained (a missing Secret or files, no permission)."""


@dataclass(frozen=True)
class TLSBundle:
    """What the webhook serves and what the API server must trust."""

    ca: bytes
    """PEM CA certificate(s) for the `caBundle`; empty: the API server's system trust applies."""
    cert: bytes
    """PEM serving certificate (and intermediates)."""
    key: bytes
    """PEM private key of the serving certificate."""
    ca_key: bytes = b""
    """PEM private key of the first CA in `ca`, only for a CA the operator keeps itself."""


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(now: datetime.datetime, validity: datetime.timedelta = CA_VALIDITY) -> tuple[bytes, bytes]:
    """(CA certificate, CA key) as PEM, valid for `validity`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(_backdated(now, validity))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(PEM), _key_pem(key)


def issue(ca_pem: bytes, ca_key_pem: bytes, hosts: list[str], now: datetime.datetime,
          validity: datetime.timedelta = VALIDITY) -> tuple[bytes, bytes]:
    """(serving certificate, its key) as PEM for `hosts` (DNS names or IPs), signed by the CA, valid for `validity`
    (never beyond the CA)."""
    if not hosts:
        raise ValueError("the serving certificate needs at least one host name")
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_backdated(now, validity))
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(PEM), _key_pem(key)


def fresh(hosts: list[str], now: datetime.datetime, lifetime: Lifetime = DEFAULT_LIFETIME) -> TLSBundle:
    """A new CA and a serving certificate for `hosts`."""
    ca, ca_key = new_ca(now, lifetime.ca_validity)
    cert, key = issue(ca, ca_key, hosts, now, lifetime.validity)
    return TLSBundle(ca=ca, cert=cert, key=key, ca_key=ca_key)


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem) if pem.strip() else []
    except ValueError:
        return []


def serves(bundle: TLSBundle, hosts: list[str], now: datetime.datetime,
           renew_fraction: float = RENEW_FRACTION) -> bool:
    """Is the serving certificate for every host, signed by the bundle's first CA, matching its key, and not yet due
    for renewal (`renewal_due` with `renew_fraction`)?"""
    certs, cas = _certificates(bundle.cert), _certificates(bundle.ca)
    if not certs or not cas:
        return False
    cert = certs[0]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(cas[0])
        key = serialization.load_pem_private_key(bundle.key, password=None)
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if key.public_key() != cert.public_key():
        return False
    covered = {str(n.value) for n in names}
    due = renewal_due(cert.not_valid_before_utc, cert.not_valid_after_utc, now, renew_fraction)
    return not due and all(str(_san(h).value) in covered for h in hosts)


def _ca_usable(bundle: TLSBundle, now: datetime.datetime, fraction: float) -> bool:
    cas = _certificates(bundle.ca)
    if not cas or not bundle.ca_key:
        return False
    try:
        key = serialization.load_pem_private_key(bundle.ca_key, password=None)
    except (ValueError, TypeError):
        return False
    due = renewal_due(cas[0].not_valid_before_utc, cas[0].not_valid_after_utc, now, fraction)
    return key.public_key() == cas[0].public_key() and not due


def renewed(current: TLSBundle | None, hosts: list[str], now: datetime.datetime,
            lifetime: Lifetime = DEFAULT_LIFETIME) -> TLSBundle | None:
    """The bundle to keep instead of `current` (an operator-kept CA), or None when `current` is still good.

    A CA near its end (or missing, or unreadable) is replaced by a new one, and the old CA stays in `ca` while it
    is valid, so that a replica still serving a certificate from it keeps working. Otherwise only the serving
    certificate is reissued, by the same CA, when it is due or misses a host.
    """
    if current is not None and _ca_usable(current, now, lifetime.ca_renew_fraction):
        if serves(current, hosts, now, lifetime.renew_fraction):
            return None
        cert, key = issue(current.ca, current.ca_key, hosts, now, lifetime.validity)
        return TLSBundle(ca=current.ca, cert=cert, key=key, ca_key=current.ca_key)
    bundle = fresh(hosts, now, lifetime)
    previous = b"".join(c.public_bytes(PEM) for c in _certificates(current.ca if current else b"")[:1]
                        if c.not_valid_after_utc > now)
    return TLSBundle(ca=bundle.ca + previous, cert=bundle.cert, key=bundle.key, ca_key=bundle.ca_key)


def merge_ca_bundle(current: bytes, registered: bytes | None, now: datetime.datetime, limit: int = 4) -> bytes:
    """The `caBundle` to register: the CAs of `current` plus those already registered that are still valid.

    Replicas pick up a new certificate at different moments (a mounted Secret is refreshed by the kubelet within
    about a minute, a shared Secret at the next refresh): keeping the CA that signed the certificate another
    replica still serves keeps its answers verifiable. Ordered newest first (by notBefore, then fingerprint), so
    every replica computes the same bundle; at most `limit` certificates.
    """
    chosen: dict[bytes, x509.Certificate] = {}
    for position, cert in enumerate(_certificates(current)):
        if position == 0 or cert.not_valid_after_utc > now:  # the CA in use always; older ones while valid
            chosen.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    for cert in _certificates(registered or b""):
        if cert.not_valid_after_utc > now:
            chosen.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    ordered = sorted(chosen.items(), key=lambda item: (item[1].not_valid_before_utc, item[0]), reverse=True)
    return b"".join(cert.public_bytes(PEM) for _, cert in ordered[:limit])


SECRET_KEYS = {"ca": "ca.crt", "ca_key": "ca.key", "cert": "tls.crt", "key": "tls.key"}


def to_secret_data(bundle: TLSBundle) -> dict[str, str]:
    """The Secret's `data` (base64) for `bundle`."""
    return {key: base64.b64encode(getattr(bundle, field)).decode() for field, key in SECRET_KEYS.items()}


def from_secret_data(data: Mapping[str, Any] | None) -> TLSBundle | None:
    """The bundle kept in a Secret's `data`, or None when it is empty or incomplete."""
    data = data or {}
    try:
        values = {field: base64.b64decode(str(data.get(key) or ""), validate=True)
                  for field, key in SECRET_KEYS.items()}
    except ValueError:
        return None
    if not all(values.values()):
        return None
    return TLSBundle(**values)


def read_dir(directory: Path) -> TLSBundle:
    """`tls.crt`, `tls.key` and (optional) `ca.crt` from `directory` (a mounted kubernetes.io/tls Secret)."""
    try:
        cert, key = (directory / "tls.crt").read_bytes(), (directory / "tls.key").read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read the webhook certificate in {directory}: {exc}") from exc
    ca_file = directory / "ca.crt"
    return TLSBundle(ca=ca_file.read_bytes() if ca_file.is_file() else b"", cert=cert, key=key)


def write_serving_file(path: Path, bundle: TLSBundle) -> None:
    """Certificate and key in one file (mode 0600), replaced atomically: the webhook server, which re-reads it
    when it changes, never sees a certificate with the previous key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(bundle.cert.rstrip(b"\n") + b"\n" + bundle.key)
    os.replace(staging, path)


# --- where the bundle comes from --------------------------------------------------------------------------------

class Api(Protocol):
    """The part of `digest_operator.k8s.KubeClient` the sources use."""

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        ...

    async def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        ...


class Source(Protocol):
    async def load(self) -> TLSBundle:
        """The bundle to serve now; may renew it. Raises CertError (or the client's errors) when unavailable."""
        ...


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class LocalCerts:
    """A CA and certificate of this process, renewed in memory."""

    hosts: list[str]
    bundle: TLSBundle | None = None
    lifetime: Lifetime = DEFAULT_LIFETIME

    async def load(self) -> TLSBundle:
        self.bundle = renewed(self.bundle, self.hosts, _utcnow(), self.lifetime) or self.bundle
        assert self.bundle is not None
        return self.bundle


@dataclass
class MountedCerts:
    directory: Path

    async def load(self) -> TLSBundle:
        return read_dir(self.directory)


@dataclass
class SecretCerts:
    """The CA and certificate all replicas share, kept in the Secret `namespace/name` (get + patch only)."""

    client: Api
    namespace: str
    name: str
    hosts: list[str]
    attempts: int = 5
    lifetime: Lifetime = DEFAULT_LIFETIME

    async def load(self) -> TLSBundle:
        for _ in range(self.attempts):
            secret = await self.client.get("v1", "secrets", self.namespace, self.name)
            if secret is None:
                raise CertError(
                    f"Secret {self.namespace}/{self.name} not found: the installation (manifests/webhook/"
                    f"operator-certs) creates it empty, and the operator may only read and update it")
            current = from_secret_data(secret.get("data"))
            now = _utcnow()
            bundle = renewed(current, self.hosts, now, self.lifetime)
            if bundle is None:
                assert current is not None
                return current
            version = secret.get("metadata", {}).get("resourceVersion")
            patch = {"metadata": {"resourceVersion": version}, "data": to_secret_data(bundle)}
            try:
                await self.client.request(
                    "PATCH", resource_path("v1", "secrets", self.namespace, self.name), body=patch,
                    content_type="application/merge-patch+json")
            except ApiError as exc:
                if exc.status == 409:
                    continue  # another replica wrote it first: use theirs
                raise
            logger.info("webhook certificate %s in Secret %s/%s (valid until %s)",
                        "created" if current is None else "renewed", self.namespace, self.name,
                        x509.load_pem_x509_certificate(bundle.cert).not_valid_after_utc.isoformat())
            return bundle
        raise CertError(f"Secret {self.namespace}/{self.name} kept changing while it was being filled")


# --- the old file-based helpers (still used for other TLS servers in tests) -------------------------------------

@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> CertFiles:
        return cls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")

    def exist(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()


def build(hosts: list[str], now: datetime.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, serving certificate, serving key) as PEM, valid for `hosts` (DNS names or IPs)."""
    bundle = fresh(hosts, now or _utcnow())
    return bundle.ca, bundle.cert, bundle.key


def usable(files: CertFiles, hosts: list[str], now: datetime.datetime | None = None) -> bool:
    """Do the files hold a certificate for every host that is not yet due for renewal?"""
    if not files.exist():
        return False
    bundle = TLSBundle(ca=files.ca.read_bytes(), cert=files.cert.read_bytes(), key=files.key.read_bytes())
    return serves(bundle, hosts, now or _utcnow())


def ensure(directory: Path, hosts: list[str]) -> CertFiles:
    """Certificates for `hosts` in `directory`, generated unless usable ones are there already."""
    files = CertFiles.in_dir(directory)
    if usable(files, hosts):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = build(hosts)
    files.key.touch(mode=0o600)
    files.key.write_bytes(key)
    files.cert.write_bytes(cert)
    files.ca.write_bytes(ca)
    return files
