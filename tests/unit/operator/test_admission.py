"""Pure admission decisions, the rendered webhook configurations, and the webhook's certificates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import datetime
import ssl
from pathlib import Path
from typing import Any

import cel
import pytest
from cryptography import x509

from digest_operator import admission, certs
from digest_operator.admission import denial, needs_pinning
from digest_operator.config import ConfigError, OperatorConfig
from digest_operator.k8s import ApiError
from tests.support.kubeconfig import free_port
from tests.support.samples import minimal
from tests.support.schemas import assert_valid

TAG = "registry.example.com/team/worker:1.0"
SERVICE = "digest-system/digest-operator-webhook:443"
SVC_HOSTS = ["digest-operator-webhook.digest-system.svc", "digest-operator-webhook.digest-system.svc.cluster.local"]
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


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


# --- settings -----------------------------------------------------------------------------------------------------

def test_webhook_service_and_certificate_secret_settings() -> None:
    config = OperatorConfig.from_env({
        "DIGEST_OPERATOR_WEBHOOK": "validate",
        "DIGEST_OPERATOR_WEBHOOK_SERVICE": "digest-system/digest-operator-webhook",
        "DIGEST_OPERATOR_WEBHOOK_CERT_SECRET": "digest-system/digest-operator-webhook-certs",
        "DIGEST_OPERATOR_WEBHOOK_REFRESH_SECONDS": "5",
    })
    assert config.webhook_service_ref == ("digest-system", "digest-operator-webhook", 443)
    assert config.webhook_cert_secret_ref == ("digest-system", "digest-operator-webhook-certs")
    assert config.webhook_refresh_seconds == 5
    assert OperatorConfig.from_env({"DIGEST_OPERATOR_WEBHOOK_SERVICE": "ns/svc:8443"}).webhook_service_ref == (
        "ns", "svc", 8443)
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env({
            "DIGEST_OPERATOR_WEBHOOK_SERVICE": "digest-operator-webhook", "DIGEST_OPERATOR_WEBHOOK_HOST": "10.0.0.1",
            "DIGEST_OPERATOR_WEBHOOK_CERT_SECRET": "no-namespace", "DIGEST_OPERATOR_WEBHOOK_CERT_DIR": "/certs"})
    text = str(info.value)
    assert "DIGEST_OPERATOR_WEBHOOK_SERVICE=digest-operator-webhook: must be NAMESPACE/NAME" in text
    assert "DIGEST_OPERATOR_WEBHOOK_SERVICE and DIGEST_OPERATOR_WEBHOOK_HOST: set one of them" in text
    assert "DIGEST_OPERATOR_WEBHOOK_CERT_SECRET=no-namespace: must be NAMESPACE/NAME" in text
    assert "DIGEST_OPERATOR_WEBHOOK_CERT_DIR and DIGEST_OPERATOR_WEBHOOK_CERT_SECRET: set one of them" in text
    with pytest.raises(ConfigError, match="WEBHOOK_SERVICE=ns/svc:99999"):
        OperatorConfig.from_env({"DIGEST_OPERATOR_WEBHOOK_SERVICE": "ns/svc:99999"})


def _config(**changes: Any) -> OperatorConfig:
    return dataclasses.replace(OperatorConfig(), **{"webhook": "validate", **changes})


# --- the rendered configuration -----------------------------------------------------------------------------------

def test_the_service_form_names_the_service_its_port_and_the_handler_path() -> None:
    config = _config(webhook_service=SERVICE)
    assert admission.serving_hosts(config) == SVC_HOSTS
    validating = admission.configuration(config, "validating", b"CA")
    (webhook,) = validating["webhooks"]
    assert webhook["name"] == "image-pinned.digest.dev"
    assert webhook["clientConfig"] == {
        "service": {"namespace": "digest-system", "name": "digest-operator-webhook", "port": 443,
                    "path": "/image-pinned"},
        "caBundle": base64.b64encode(b"CA").decode()}
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"], webhook["sideEffects"]) == ("Fail", 10, "None")
    assert webhook["rules"] == [{"apiGroups": ["digest.dev"], "apiVersions": ["v1alpha1"],
                                 "operations": ["CREATE", "UPDATE"], "resources": ["digestpipelines"],
                                 "scope": "Namespaced"}]  # no DELETE; not the status subresource
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert validating["metadata"]["name"] == "digest.dev"
    assert admission.configuration(config, "mutating", b"CA")["webhooks"] == []  # mode validate: none
    assert_valid(validating)


def test_the_url_form_for_an_api_server_that_reaches_the_operator_directly() -> None:
    config = _config(webhook_host="127.0.0.1", webhook_port=9444)
    assert admission.serving_hosts(config) == ["127.0.0.1"]
    assert admission.client_config(config, b"", "/image-pinned") == {"url": "https://127.0.0.1:9444/image-pinned"}
    assert admission.client_config(_config(webhook_addr="::1"), b"")["url"] == "https://[::1]:9443"
    assert admission.serving_hosts(_config()) == ["localhost"]  # 0.0.0.0 is no name to call


def test_mutating_mode_adds_a_fail_open_mutating_webhook() -> None:
    config = _config(webhook="mutate", webhook_service=SERVICE, webhook_failure_policy="Ignore")
    mutating = admission.configuration(config, "mutating", b"CA")
    (webhook,) = mutating["webhooks"]
    assert (webhook["name"], webhook["failurePolicy"], webhook["reinvocationPolicy"]) == (
        "pin-image.digest.dev", "Ignore", "Never")
    assert webhook["clientConfig"]["service"]["path"] == "/pin-image"
    assert webhook["timeoutSeconds"] == 30 and webhook["matchConditions"] == admission.MATCH_CONDITIONS
    assert admission.configuration(config, "validating", b"CA")["webhooks"][0]["failurePolicy"] == "Ignore"
    assert mutating["kind"] == "MutatingWebhookConfiguration"


def _sent(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> bool:
    """Would the API server call the webhook? (every matchCondition true; CEL as the API server evaluates it)"""
    variables = {"request": {"operation": operation}, "object": obj, "oldObject": old}
    return all(cel.evaluate(c["expression"], variables) for c in admission.MATCH_CONDITIONS)


def test_match_conditions_send_creates_and_spec_changes_only() -> None:
    stored = minimal(image=TAG)
    stored["metadata"]["finalizers"] = ["digest.dev/finalizer"]
    assert _sent("CREATE", minimal(image=TAG))
    changed = copy.deepcopy(stored)
    changed["spec"]["image"] = "registry.example.com/team/worker:2.0"
    assert _sent("UPDATE", changed, stored)
    unfinalized = copy.deepcopy(stored)
    unfinalized["metadata"]["finalizers"] = []
    labelled = copy.deepcopy(stored)
    labelled["metadata"]["labels"] = {"team": "a"}
    deleting = copy.deepcopy(changed)
    deleting["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    for update in (unfinalized, labelled, deleting):
        assert not _sent("UPDATE", update, stored)
    # what is not sent is what the webhook admits anyway: a skipped update never hides a denial
    for update in (unfinalized, labelled):
        assert denial(update["spec"], stored["spec"]) is None


# --- writing the configurations -----------------------------------------------------------------------------------

class FakeApi:
    """Objects by (plural, namespace, name); apply and merge patch as the API server does for these objects."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.conflicts = 0
        self.version = 0

    def _key(self, path: str) -> tuple[str, str | None, str]:
        parts = path.strip("/").split("/")
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else None
        return parts[-2], namespace, parts[-1]

    def _store(self, key: tuple[str, str | None, str], obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        self.writes.append(("apply", plural))
        meta = obj["metadata"]
        return self._store((plural, meta.get("namespace"), meta["name"]), copy.deepcopy(obj))

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any] | None:
        assert (method, content_type) == ("PATCH", "application/merge-patch+json")
        key = self._key(path)
        self.writes.append(("patch", key[0]))
        live = self.objects[key]
        if self.conflicts:
            self.conflicts -= 1
            raise ApiError(409, "Conflict", "the object has been modified")
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != live["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        merged = copy.deepcopy(live)
        for field, value in body.items():  # lists are replaced whole (RFC 7386)
            if isinstance(value, dict) and isinstance(merged.get(field), dict):
                merged[field] = {**merged[field], **value}
            else:
                merged[field] = value
        return self._store(key, merged)


VALIDATING = ("validatingwebhookconfigurations", None, "digest.dev")
MUTATING = ("mutatingwebhookconfigurations", None, "digest.dev")


def test_register_creates_once_then_writes_nothing_and_repairs_drift() -> None:
    api, config = FakeApi(), _config(webhook_service=SERVICE)
    ca = certs.fresh(SVC_HOSTS, NOW).ca
    assert asyncio.run(admission.register(api, config, ca, NOW)) == ["validating"]
    assert api.writes == [("apply", "validatingwebhookconfigurations")]  # created by apply; no empty mutating one
    stored = api.objects[VALIDATING]
    assert base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"]) == ca
    assert "digest.dev/applied-hash" in stored["metadata"]["annotations"]
    assert asyncio.run(admission.register(api, config, ca, NOW)) == []  # a second replica: no write

    stored["webhooks"][0]["clientConfig"] = {"url": "https://digest-operator-webhook.digest-system.svc:9443/x",
                                             "caBundle": stored["webhooks"][0]["clientConfig"]["caBundle"]}
    stored["webhooks"][0]["failurePolicy"] = "Ignore"
    assert asyncio.run(admission.register(api, config, ca, NOW)) == ["validating"]
    (webhook,) = api.objects[VALIDATING]["webhooks"]
    assert "url" not in webhook["clientConfig"] and webhook["clientConfig"]["service"]["port"] == 443
    assert webhook["failurePolicy"] == "Fail"

    api.objects[MUTATING] = {"metadata": {"name": "digest.dev", "resourceVersion": "1"},
                             "webhooks": [{"name": "pin-image.digest.dev"}]}  # left from mutate mode
    assert asyncio.run(admission.register(api, config, ca, NOW)) == ["mutating"]
    assert api.objects[MUTATING]["webhooks"] == []
    assert asyncio.run(admission.register(api, dataclasses.replace(config, webhook_configuration=""), ca)) == []


def test_register_keeps_the_previous_ca_while_replicas_switch() -> None:
    api, config = FakeApi(), _config(webhook_service=SERVICE)
    old = certs.fresh(SVC_HOSTS, NOW - datetime.timedelta(days=10)).ca
    new = certs.fresh(SVC_HOSTS, NOW).ca
    asyncio.run(admission.register(api, config, old, NOW))
    asyncio.run(admission.register(api, config, new, NOW))  # the replica that saw the new CA first
    both = base64.b64decode(api.objects[VALIDATING]["webhooks"][0]["clientConfig"]["caBundle"])
    assert x509.load_pem_x509_certificates(both) == x509.load_pem_x509_certificates(new + old)
    assert asyncio.run(admission.register(api, config, old, NOW)) == []  # the lagging replica agrees
    later = NOW + certs.CA_VALIDITY
    assert asyncio.run(admission.register(api, config, new, later)) == ["validating"]  # expired CA dropped
    assert base64.b64decode(api.objects[VALIDATING]["webhooks"][0]["clientConfig"]["caBundle"]) == new


# --- certificates -------------------------------------------------------------------------------------------------

def _leaf(bundle: certs.TLSBundle) -> x509.Certificate:
    return x509.load_pem_x509_certificate(bundle.cert)


def test_a_fresh_bundle_serves_the_service_names_from_its_own_ca() -> None:
    bundle = certs.fresh(SVC_HOSTS, NOW)
    cert = _leaf(bundle)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == SVC_HOSTS
    ca = x509.load_pem_x509_certificate(bundle.ca)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert certs.serves(bundle, SVC_HOSTS, NOW)
    assert certs.renewed(bundle, SVC_HOSTS, NOW) is None
    assert not certs.serves(dataclasses.replace(bundle, key=certs.fresh(SVC_HOSTS, NOW).key), SVC_HOSTS, NOW)


def test_renewal_is_due_when_less_than_the_fraction_of_the_validity_is_left() -> None:
    start, end = NOW, NOW + datetime.timedelta(days=90)
    day = datetime.timedelta(days=1)
    assert not certs.renewal_due(start, end, start, 1 / 3)
    assert not certs.renewal_due(start, end, start + 59 * day, 1 / 3)  # 31 of 90 days left
    assert certs.renewal_due(start, end, start + 61 * day, 1 / 3)  # 29 left
    assert certs.renewal_due(start, end, end + day, 1 / 3)  # expired
    assert certs.renewal_due(start, end, start - day, 1 / 3)  # not yet valid: a clock that jumped back
    assert not certs.renewal_due(start, end, start + 89 * day, 0.01) and certs.renewal_due(start, end, end, 0.01)
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            certs.renewal_due(start, end, start, fraction)
    # the shipped lifetime: a year's certificate is renewed about four months before its end
    bundle = certs.fresh(SVC_HOSTS, NOW)
    assert certs.serves(bundle, SVC_HOSTS, NOW + datetime.timedelta(days=243))
    assert not certs.serves(bundle, SVC_HOSTS, NOW + datetime.timedelta(days=244))


def test_renewal_reissues_by_the_same_ca_and_replaces_a_ca_near_its_end() -> None:
    bundle = certs.fresh(SVC_HOSTS, NOW)
    due = NOW + certs.VALIDITY * (1 - certs.RENEW_FRACTION) + datetime.timedelta(days=1)
    reissued = certs.renewed(bundle, SVC_HOSTS, due)
    assert reissued is not None and (reissued.ca, reissued.ca_key) == (bundle.ca, bundle.ca_key)
    assert reissued.cert != bundle.cert and certs.serves(reissued, SVC_HOSTS, due)
    another_host = certs.renewed(bundle, [*SVC_HOSTS, "10.96.0.10"], NOW)
    assert another_host is not None and another_host.ca == bundle.ca

    ca_due = NOW + certs.CA_VALIDITY * (1 - certs.CA_RENEW_FRACTION) + datetime.timedelta(days=1)
    replaced = certs.renewed(bundle, SVC_HOSTS, ca_due)
    assert replaced is not None and replaced.ca_key != bundle.ca_key
    new_ca, old_ca = x509.load_pem_x509_certificates(replaced.ca)
    assert old_ca == x509.load_pem_x509_certificate(bundle.ca)  # still trusted while it is valid
    _leaf(replaced).verify_directly_issued_by(new_ca)
    assert certs.renewed(None, SVC_HOSTS, NOW) is not None
    assert certs.renewed(dataclasses.replace(bundle, ca_key=b""), SVC_HOSTS, NOW) is not None  # unusable CA


def test_secret_data_round_trips_and_an_empty_secret_has_no_bundle() -> None:
    bundle = certs.fresh(SVC_HOSTS, NOW)
    data = certs.to_secret_data(bundle)
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert certs.from_secret_data(data) == bundle
    assert certs.from_secret_data(None) is None
    assert certs.from_secret_data({"ca.crt": data["ca.crt"]}) is None
    assert certs.from_secret_data({**data, "tls.key": "not base64!"}) is None


def test_merge_ca_bundle_is_the_same_for_every_replica() -> None:
    old, new = certs.fresh(["a"], NOW - datetime.timedelta(days=1)).ca, certs.fresh(["a"], NOW).ca
    expected = x509.load_pem_x509_certificates(new + old)
    for current, registered in ((new, old), (old, new + old), (new, new + old), (old, old + new)):
        merged = certs.merge_ca_bundle(current, registered, NOW)
        assert x509.load_pem_x509_certificates(merged) == expected
    assert certs.merge_ca_bundle(new, None, NOW) == new
    expired = NOW + certs.CA_VALIDITY + datetime.timedelta(days=1)
    assert certs.merge_ca_bundle(new, old, expired) == new  # the CA in use stays; an expired old one goes


def test_the_serving_file_holds_certificate_and_key_for_the_tls_server(tmp_path: Path) -> None:
    bundle = certs.fresh(["127.0.0.1"], datetime.datetime.now(datetime.UTC))
    path = tmp_path / "webhook" / "serving.pem"
    certs.write_serving_file(path, bundle)
    assert path.stat().st_mode & 0o777 == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(path), str(path))
    certs.write_serving_file(path, certs.fresh(["127.0.0.1"], datetime.datetime.now(datetime.UTC)))
    assert path.read_bytes() != bundle.cert + bundle.key and not path.with_name("serving.pem.new").exists()


SECRET = ("secrets", "digest-system", "digest-operator-webhook-certs")


def _empty_secret(api: FakeApi) -> None:
    api.objects[SECRET] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": SECRET[2], "namespace": SECRET[1], "resourceVersion": "1"}}


def test_the_first_replica_fills_the_shared_secret_and_the_others_read_it() -> None:
    api = FakeApi()
    _empty_secret(api)
    first = certs.SecretCerts(api, "digest-system", SECRET[2], SVC_HOSTS)
    bundle = asyncio.run(first.load())
    assert certs.from_secret_data(api.objects[SECRET]["data"]) == bundle
    assert api.writes == [("patch", "secrets")]
    second = certs.SecretCerts(api, "digest-system", SECRET[2], SVC_HOSTS)
    assert asyncio.run(second.load()) == bundle and len(api.writes) == 1  # read, not written


def test_a_replica_that_loses_the_race_uses_the_winners_certificate() -> None:
    api = FakeApi()
    _empty_secret(api)
    winner = certs.fresh(SVC_HOSTS, datetime.datetime.now(datetime.UTC))

    class Racing(FakeApi):
        async def request(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
            if not self.writes:  # the other replica writes between our read and our write
                self.objects[SECRET] = {**self.objects[SECRET], "data": certs.to_secret_data(winner),
                                        "metadata": {**self.objects[SECRET]["metadata"], "resourceVersion": "2"}}
            return await super().request(*args, **kwargs)

    racing = Racing()
    racing.objects = api.objects
    assert asyncio.run(certs.SecretCerts(racing, "digest-system", SECRET[2], SVC_HOSTS).load()) == winner
    assert racing.writes == [("patch", "secrets")]  # one refused write, then the winner's bundle


def test_a_missing_secret_names_the_fix() -> None:
    with pytest.raises(certs.CertError, match="manifests/webhook/operator-certs"):
        asyncio.run(certs.SecretCerts(FakeApi(), "digest-system", SECRET[2], SVC_HOSTS).load())


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


def test_a_mounted_certificate_directory_is_read_as_is(tmp_path: Path) -> None:
    files = certs.ensure(tmp_path, ["127.0.0.1"])
    config = _config(webhook_cert_dir=str(tmp_path), webhook_host="127.0.0.1")
    source = admission.cert_source(config, FakeApi())
    assert isinstance(source, certs.MountedCerts)
    bundle = asyncio.run(source.load())
    assert (bundle.ca, bundle.cert, bundle.key) == (files.ca.read_bytes(), files.cert.read_bytes(),
                                                    files.key.read_bytes())
    files.ca.unlink()
    assert asyncio.run(source.load()).ca == b""  # no caBundle: the API server's own trust applies
    assert "caBundle" not in admission.client_config(config, b"")
    files.key.unlink()
    with pytest.raises(certs.CertError, match=r"tls\.key"):
        asyncio.run(source.load())
    assert isinstance(admission.cert_source(_config(webhook_cert_secret="a/b"), FakeApi()), certs.SecretCerts)
    assert isinstance(admission.cert_source(_config(), FakeApi()), certs.LocalCerts)


# --- renewal while the webhook server runs ------------------------------------------------------------------------

SHORT = certs.Lifetime(validity=datetime.timedelta(seconds=4), renew_fraction=0.75,
                       ca_validity=datetime.timedelta(seconds=8), ca_renew_fraction=0.6)
"""Certificates reissued after about a second, the CA replaced after about three."""


async def _served(port: int, trusted: bytes) -> x509.Certificate | None:
    """The certificate a TLS handshake with 127.0.0.1:`port` gets, verified (chain, validity, IP SAN) against
    `trusted` as the API server does with the caBundle; None while the server restarts with a new one."""
    context = ssl.create_default_context(cadata=trusted.decode())
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), timeout=2)
    except ssl.SSLCertVerificationError:
        raise
    except (OSError, TimeoutError):
        return None
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def test_a_running_webhook_server_renews_its_certificate_and_ca_and_serves_them(tmp_path: Path) -> None:
    port = free_port()
    config = _config(webhook_addr="127.0.0.1", webhook_host="127.0.0.1", webhook_port=port,
                     webhook_refresh_seconds=0.2)
    api = FakeApi()
    server = admission.WebhookServer(config, lambda: api, tmp_path, SHORT)

    async def review(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no admission request is sent here")

    async def run() -> None:
        async for _ in server(review):  # Kopf's admission loop consumes the server like this
            pass

    serving = asyncio.create_task(run())
    try:
        await asyncio.wait_for(server.serving.wait(), timeout=10)
        started = datetime.datetime.now(datetime.UTC)
        seen: dict[int, x509.Certificate] = {}
        first_ca: x509.Name | None = None
        cas: set[bytes] = set()
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            registered = admission.registered_ca(api.objects.get(VALIDATING))
            if registered:
                cert = await _served(port, registered)  # verified against what the API server would trust
                if cert is not None:
                    seen.setdefault(cert.serial_number, cert)
                    issuer_key = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
                    cas.add(issuer_key.key_identifier or b"")
                    first_ca = first_ca or cert.issuer
                    if len(cas) >= 2 and datetime.datetime.now(datetime.UTC) > started + SHORT.ca_validity:
                        break
            await asyncio.sleep(0.1)
        ordered = sorted(seen.values(), key=lambda c: c.not_valid_before_utc)
        assert len(ordered) >= 3, "the serving certificate was reissued while the server ran"
        assert len(cas) >= 2, "the CA was replaced while the server ran"
        # still answering, with a verified certificate, after the first certificate and the first CA expired
        assert datetime.datetime.now(datetime.UTC) > ordered[0].not_valid_after_utc
        assert datetime.datetime.now(datetime.UTC) > started + SHORT.ca_validity
        latest = await _served(port, admission.registered_ca(api.objects[VALIDATING]))
        assert latest is not None and latest.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
        assert latest.serial_number not in {c.serial_number for c in ordered[:2]}  # not one of the first ones
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
