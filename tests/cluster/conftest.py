"""Fixtures of the `cluster` tier: a real single-node cluster (`digest_cluster`), the project's images built from
its Dockerfiles and pinned by digest, the operator installed with `kubectl apply --server-side -k`, and the host
services pods use (Service Bus emulator, local Teams, PostgreSQL) on the node's bridge address.

One cluster per test session (fixed addresses: one per machine), so every test of this tier is in one xdist group.
A component that cannot be built or started fails the tier with the exact error; nothing here skips.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from digest_cluster import cluster as cluster_mod
from digest_cluster import images, install, keda, services
from digest_cluster.layout import REGISTRY, Layout, cache_root
from digest_cluster.stack import MAX_DELIVERY, PARK_QUEUE, QUEUE
from tests.support.schemas import REFERENCE

ROOT = Path(__file__).resolve().parents[2]
SCALING_QUEUE = "digest-scaling"
LOAD_QUEUE = "digest-load"
# KEDA, once installed, scales idle workers to zero: the modules that expect a worker pod without a queue run
# before the ones that install it
MODULE_ORDER = ("test_install", "test_pipeline", "test_rollouts", "test_webhook")


def _module_rank(item: pytest.Item) -> int:
    module = Path(str(item.fspath)).stem
    return MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tier = [item for item in items if "tests/cluster/" in str(item.fspath)]
    for item in tier:
        item.add_marker(pytest.mark.cluster)
        item.add_marker(pytest.mark.xdist_group("cluster"))
        item.add_marker(pytest.mark.timeout(600))
    if tier:
        first = items.index(tier[0])
        members = set(tier)
        rest = [item for item in items if item not in members]
        items[:] = rest[:first] + sorted(tier, key=_module_rank) + rest[first:]


@dataclass(frozen=True)
class Images:
    python: str
    operator: str
    worker: str
    store: images.ImageStore


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster_mod.Cluster]:
    """A fresh cluster in a temporary state directory, removed (host changes undone) after the session.

    With DIGEST_CLUSTER_REUSE=1 a cluster started by `digestctl cluster up` is used instead and left running
    (for fast iteration; the tests use their own namespaces)."""
    default = cluster_mod.running()
    if default is not None:
        if os.environ.get("DIGEST_CLUSTER_REUSE") == "1" and default.node_ready():
            yield default
            return
        pytest.fail(f"a cluster is already running (state in {default.layout.root}): the tier needs the machine's "
                    "cluster addresses; stop it with `digestctl cluster down` (or set DIGEST_CLUSTER_REUSE=1)")
    layout = Layout(tmp_path_factory.mktemp("cluster"), cache_root())
    try:
        started = cluster_mod.up(layout)
    except Exception:
        cluster_mod.down(layout)
        raise
    try:
        yield started
    finally:
        cluster_mod.down(layout)


@pytest.fixture(scope="session")
def project_images(cluster: cluster_mod.Cluster) -> Images:
    """The operator and worker images from the unmodified Dockerfiles on a Debian-built Python base that trusts
    the local CA (the local Teams token endpoint and the emulator present certificates from it)."""
    store = images.ImageStore(cluster.layout.images, REGISTRY)
    python = images.python_image(store, extra_ca_pem=(cluster.layout.ca_dir / "ca.crt").read_bytes())
    operator = images.project_image(store, "digest-operator", ROOT / "Dockerfile.operator", ROOT, python)
    worker = images.project_image(store, "digest-worker", ROOT / "Dockerfile.worker", ROOT, python)
    return Images(python, operator, worker, store)


def install_keda_crds(cluster: cluster_mod.Cluster) -> None:
    install.apply_crds(cluster, sorted((REFERENCE / "keda").glob("*.yaml")))


@pytest.fixture(scope="session")
def keda_crds(cluster: cluster_mod.Cluster) -> None:
    """KEDA's CRDs (the pipelines' ScaledObject and TriggerAuthentication); KEDA itself is not needed here."""
    install_keda_crds(cluster)


@pytest.fixture(scope="session")
def keda_installed(cluster: cluster_mod.Cluster, project_images: Images) -> str:
    """Real KEDA (operator, metrics API server, admission webhooks) from its own kustomization, in images built
    here from the cached KEDA build; returns the KEDA image reference."""
    directory = keda.keda_dir()
    ref = keda.image(project_images.store, directory)
    keda.install(cluster, ref, directory / "config", (cluster.layout.ca_dir / "ca.crt").read_bytes())
    return ref


@pytest.fixture(scope="session")
def emulator(cluster: cluster_mod.Cluster) -> Iterator[services.Emulator]:
    services.stop(cluster.layout, "emulator")  # a reused cluster may still run `digestctl up --keep`'s
    yield services.start_emulator(cluster.layout, [
        f"{QUEUE}:MaxDeliveryCount={MAX_DELIVERY},LockDuration=PT30S", f"{PARK_QUEUE}:MaxDeliveryCount=10",
        f"{SCALING_QUEUE}:MaxDeliveryCount={MAX_DELIVERY},LockDuration=PT30S",
        f"{LOAD_QUEUE}:MaxDeliveryCount={MAX_DELIVERY},LockDuration=PT30S", f"{LOAD_QUEUE}-parked"])
    services.stop(cluster.layout, "emulator")


@pytest.fixture(scope="session")
def teams(cluster: cluster_mod.Cluster) -> Iterator[services.Teams]:
    services.stop(cluster.layout, "teams")
    yield services.start_teams(cluster.layout)
    services.stop(cluster.layout, "teams")


@pytest.fixture(scope="session")
def postgres(cluster: cluster_mod.Cluster) -> Iterator[services.Postgres]:
    services.stop(cluster.layout, "postgres")
    yield services.start_postgres(cluster.layout)
    services.stop(cluster.layout, "postgres")


@pytest.fixture
def namespace(cluster: cluster_mod.Cluster) -> Iterator[str]:
    """A fresh namespace with Pod Security `restricted` enforced; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    install.apply_objects(cluster, [{
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                              "pod-security.kubernetes.io/enforce-version": "latest"}}}])
    install.wait_for(cluster, ("serviceaccount", "default", "-n", name), lambda o: o is not None, 30,
                     "the namespace's default service account")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1)[:4000]


@pytest.fixture(scope="session")
def operator_installed(cluster: cluster_mod.Cluster, project_images: Images) -> str:
    """`kubectl apply --server-side -k manifests/` once, with the operator image pinned by digest; the rollout
    finished. Returns kubectl's output."""
    return install.install_operator(cluster, ROOT / "manifests", project_images.operator)
