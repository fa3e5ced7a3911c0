"""Admission webhooks against the real control plane: TLS material for a webhook server on loopback, and the
registration of a ValidatingWebhookConfiguration that makes kube-apiserver call it over TLS.

For a webhook implemented elsewhere (e.g. the operator's own admission server), serve it with `WebhookTLS.cert_file` /
`key_file` on 127.0.0.1 and register its URL with `validating_webhook(...)`; `serve_webhook` is a small stdlib
HTTPS server for a review function written in a test.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from tests.support.controlplane import ControlPlane
from tests.support.kubeconfig import free_port

Review = Callable[[dict[str, Any]], dict[str, Any]]
"""AdmissionReview `request` in, the `response` fields out (`allowed`, optional `status.message`)."""


@dataclass(frozen=True)
class WebhookTLS:
    """A serving certificate for 127.0.0.1/localhost from its own CA; `ca_pem` goes into the caBundle."""

    cert_file: Path
    key_file: Path
    ca_pem: bytes

    @classmethod
    def issue(cls, directory: Path) -> WebhookTLS:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="digest-webhook")
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "webhook.crt", directory / "webhook.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return cls(cert, key, ca.cert_pem.bytes())


@contextlib.contextmanager
def serve_webhook(tls: WebhookTLS, review: Review) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTPS AdmissionReview server on a free loopback port; yields (base URL, received requests)."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            request = body["request"]
            received.append(request)
            response = {"uid": request["uid"], **review(request)}
            payload = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def pipeline_rules() -> list[dict[str, Any]]:
    return [{"apiGroups": ["digest.dev"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["digestpipelines"], "scope": "Namespaced"}]


@contextlib.contextmanager
def validating_webhook(plane: ControlPlane, name: str, url: str, ca_pem: bytes, *,
                       rules: list[dict[str, Any]] | None = None, namespace: str | None = None,
                       failure_policy: str = "Fail") -> Iterator[dict[str, Any]]:
    """Register a ValidatingWebhookConfiguration (default: DigestPipeline create/update, optionally only in
    `namespace`); removed afterwards. The apiserver picks it up within about a second: poll for its effect."""
    webhook: dict[str, Any] = {
        "name": f"{name}.digest.dev",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
        "rules": rules or pipeline_rules(),
        "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": failure_policy,
        "timeoutSeconds": 5,
    }
    if namespace is not None:
        webhook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    config = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
              "metadata": {"name": name}, "webhooks": [webhook]}
    base = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    code, created = plane.request("POST", base, config)
    assert code == 201, created
    try:
        yield created
    finally:
        plane.request("DELETE", f"{base}/{name}")
