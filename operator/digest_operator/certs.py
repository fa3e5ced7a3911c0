"""The admission webhook's TLS material: a private CA and a serving certificate for the webhook's host names.

Used when no certificate directory is mounted (e.g. from cert-manager): the operator makes its own CA at start-up
and hands the CA bundle to the webhook configuration it manages. Files are `ca.crt`, `tls.crt`, `tls.key` (the
names of a `kubernetes.io/tls` Secret written by cert-manager), so both sources look the same to the server.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


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


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def build(hosts: list[str], now: datetime.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, serving certificate, serving key) as PEM, valid for `hosts` (DNS names or IPs)."""
    if not hosts:
        raise ValueError("the serving certificate needs at least one host name")
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digest-operator webhook CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def usable(files: CertFiles, hosts: list[str], now: datetime.datetime | None = None) -> bool:
    """Do the files hold a certificate for every host that stays valid for longer than RENEW_BEFORE?"""
    if not files.exist():
        return False
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(n.value) for n in names}
    return cert.not_valid_after_utc - now > RENEW_BEFORE and all(str(_san(h).value) in covered for h in hosts)


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
