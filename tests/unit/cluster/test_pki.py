"""The cluster PKI: a CA kept across clusters, and leaves with the identities Kubernetes authorizes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from digest_cluster import pki


def test_the_ca_is_made_once_and_signs_client_identities(tmp_path: Path) -> None:
    ca_cert, ca_key = pki.ensure_ca(tmp_path / "ca")
    first = ca_cert.read_bytes()
    assert pki.ensure_ca(tmp_path / "ca") == (ca_cert, ca_key)
    assert ca_cert.read_bytes() == first
    assert ca_key.stat().st_mode & 0o077 == 0

    cert_path, key_path = pki.issue(tmp_path / "ca", pki.Leaf("kubelet-client", "system:node:n1", ("system:nodes",),
                                                              client=True), tmp_path / "out")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(first)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert key_path.stat().st_mode & 0o077 == 0


def test_serving_leaves_carry_ip_and_dns_names(tmp_path: Path) -> None:
    cert_path, _ = pki.issue(tmp_path / "ca", pki.Leaf("apiserver", "kube-apiserver",
                                                       hosts=("10.96.0.1", "kubernetes.default.svc"), server=True),
                             tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.96.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["kubernetes.default.svc"]
