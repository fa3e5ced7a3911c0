"""Fixtures of the `controlplane` tier: one real control plane per test session, namespaces per test, the real
operator running with the RBAC of `manifests/`, and a TLS admission-webhook hook.

The binaries come from `tests/controlplane/build` (CI runs it in .ci/run; if they are missing when the tier's tests
are selected, the build runs once after collection). If they are still missing, every test of this tier errors with
the command to run: the tier never skips silently.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admission import WebhookTLS
from tests.support.controlplane import (
    BUILD_SCRIPT,
    ControlPlane,
    ControlPlaneError,
    find_binaries,
    running_control_plane,
)
from tests.support.operator_thread import FAST, OperatorThread
from tests.support.schemas import CRD_FILES, REFERENCE

ROOT = Path(__file__).resolve().parents[2]
CRDS = [
    ROOT / "crds" / "digestpipelines.digest.dev.yaml",
    ROOT / "manifests" / "peering" / "clusterkopfpeerings.kopf.dev.yaml",
    *sorted((REFERENCE / "keda").glob("*.yaml")),
    *sorted((REFERENCE / "prometheus-operator").glob("*.yaml")),
]
assert set(CRD_FILES.values()) <= set(CRDS)
BUILD_LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "digest-pipelines-controlplane-build.lock"
OPERATOR_NAMESPACE = "digest-system"
OPERATOR_ACCOUNT = "digest-operator"
PEERING = "digest-operator"  # the --peering argument of manifests/operator/deployment.yaml


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before the first test of this tier when they are missing (a cold build takes minutes;
    CI builds them in .ci/run beforehand). A failed build leaves them missing: the tier then errors loudly."""
    if os.environ.get("DIGEST_CONTROLPLANE_BIN") or not any(
            item.get_closest_marker("controlplane") for item in session.items):
        return
    try:
        find_binaries()
    except ControlPlaneError:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"controlplane: binaries missing, running {BUILD_SCRIPT} (minutes when cold)")
        # every xdist worker collects: one builds, the others wait on the lock and then find the binaries
        with BUILD_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                find_binaries()
            except ControlPlaneError:
                subprocess.run([str(BUILD_SCRIPT)], check=False, stdout=subprocess.DEVNULL)


def install_crds(plane: ControlPlane) -> None:
    """Server-side apply our CRD, Kopf's peering CRD and the KEDA / Prometheus Operator CRDs; wait until served."""
    args = ["apply", "--server-side", "--field-manager=controlplane-tests"]
    for path in CRDS:
        args += ["-f", str(path)]
    plane.kubectl(*args)
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager with our and the reference CRDs installed.

    The work directory (PKI, kubeconfig, logs incl. the audit log) is kept like any pytest temporary directory
    (the last three sessions); its path is printed when a test failed. Only etcd's data is removed after a green
    session.
    """
    workdir = tmp_path_factory.mktemp("controlplane")
    failed_before = request.session.testsfailed
    with running_control_plane(workdir, before_controllers=install_crds) as plane:
        yield plane
        plane.check_running()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if request.session.testsfailed > failed_before:
        if reporter is not None:
            reporter.write_line(f"controlplane: logs kept in {workdir / 'logs'} (kubeconfig {plane.kubeconfig})")
    else:
        shutil.rmtree(workdir / "etcd", ignore_errors=True)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test; deleted afterwards (the namespace controller removes its contents)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    # Pod Security "restricted", as on a hardened cluster: the worker pods the ReplicaSet controller creates must
    # pass its admission
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                              "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    control_plane.wait_for(f"/api/v1/namespaces/{name}/serviceaccounts/default", lambda o: o is not None,
                           what="the namespace's default service account")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def operator_rbac(control_plane: ControlPlane) -> str:
    """The installation's namespace, service account and RBAC exactly as in manifests/; returns a token of the
    operator's service account (the operator then runs with precisely those permissions)."""
    rendered = control_plane.kubectl("kustomize", str(ROOT / "manifests" / "rbac")).stdout
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    control_plane.kubectl("apply", "--server-side", "-n", OPERATOR_NAMESPACE, "-f", "-", input=rendered)
    return control_plane.service_account_token(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane, operator_rbac: str) -> Iterator[OperatorThread]:
    """The real Kopf operator (cluster-wide, with peering, as deployed) authenticated as its service account against
    the real apiserver. As on a fresh installation there is no peering object: the operator creates it at start-up
    (an earlier module's operator may have left one)."""
    control_plane.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")
    op = OperatorThread(control_plane.server, config=FAST, peering=PEERING)
    op.runtime.credentials = lambda: control_plane.connection_info(operator_rbac)
    op.start()
    yield op
    op.stop()



@pytest.fixture
def webhook_tls(tmp_path: Path) -> WebhookTLS:
    """TLS for an admission webhook served on 127.0.0.1 (e.g. Kopf's `WebhookServer(certfile=..., pkeyfile=...)`);
    register it with `tests.support.admission.validating_webhook(control_plane, name, url, webhook_tls.ca_pem)`."""
    return WebhookTLS.issue(tmp_path / "webhook-tls")
