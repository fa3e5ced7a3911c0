"""Pure admission decisions and the webhook's certificates."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

from cryptography import x509

from digest_operator import certs
from digest_operator.admission import denial, needs_pinning
from tests.support.samples import minimal

TAG = "registry.example.com/team/worker:1.0"


def test_tag_only_images_under_require_are_denied_with_the_fix() -> None:
    message = denial(minimal(image=TAG)["spec"])
    assert message is not None
    assert f"Pin it as {TAG}@sha256:<digest>" in message
    assert "spec.imagePolicy.mode: Resolve" in message
    untagged = denial(minimal(image="registry.example.com/team/worker")["spec"])
    assert untagged is not None and "registry.example.com/team/worker:latest@sha256:<digest>" in untagged


def test_updates_that_keep_the_stored_image_are_not_denied() -> None:
    stored = minimal(image=TAG)["spec"]
    assert denial(minimal(image=TAG, scaling={"maxReplicas": 3})["spec"], old=stored) is None
    assert denial(minimal(image=TAG)["spec"], old=minimal()["spec"]) is not None  # digest → tag
    assert denial(minimal(image=TAG)["spec"], old=minimal(image=TAG, imagePolicy={"mode": "Track"})["spec"])


def test_digests_other_modes_and_malformed_images_are_not_denied() -> None:
    assert denial(minimal()["spec"]) is None
    assert denial(minimal(image=TAG, imagePolicy={"mode": "Resolve"})["spec"]) is None
    assert denial(minimal(image=TAG, imagePolicy={"mode": "Track"})["spec"]) is None
    assert denial(minimal(image="Not An Image")["spec"]) is None  # the CRD schema reports it
    assert needs_pinning(minimal(image=TAG)["spec"]) is not None


def test_certificates_are_made_for_the_hosts_and_reused(tmp_path: Path) -> None:
    hosts = ["digest-operator-webhook.digest-system.svc", "127.0.0.1"]
    files = certs.ensure(tmp_path, hosts)
    assert files.exist() and (files.key.stat().st_mode & 0o077) == 0
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == set(hosts)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca.read_bytes()))
    ssl.create_default_context().load_cert_chain(str(files.cert), str(files.key))  # key matches the certificate
    before = files.cert.read_bytes()
    assert certs.ensure(tmp_path, hosts).cert.read_bytes() == before  # still good: kept
    assert certs.ensure(tmp_path, [*hosts, "other.example.com"]).cert.read_bytes() != before  # new host
    late = datetime.datetime.now(datetime.UTC) + certs.VALIDITY - datetime.timedelta(days=1)
    assert not certs.usable(files, hosts, now=late)  # due for renewal


def test_a_mounted_certificate_directory_is_used_as_is(tmp_path: Path) -> None:
    import dataclasses

    from digest_operator.admission import server
    from digest_operator.config import OperatorConfig

    files = certs.ensure(tmp_path, ["127.0.0.1"])
    config = dataclasses.replace(OperatorConfig(), webhook="validate", webhook_cert_dir=str(tmp_path),
                                 webhook_host="127.0.0.1", webhook_port=9444)
    mounted = server(config, tmp_path / "unused")
    assert (mounted.certfile, mounted.pkeyfile, mounted.cafile) == (str(files.cert), str(files.key), str(files.ca))
    assert (mounted.host, mounted.port) == ("127.0.0.1", 9444)
    assert not (tmp_path / "unused").exists()  # nothing generated
    files.ca.unlink()
    assert server(config, tmp_path / "unused").cafile is None
