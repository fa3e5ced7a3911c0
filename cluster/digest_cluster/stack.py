"""`digestctl up`: the whole system on this machine, as users install it, then the team's load test.

In order: the cluster (built from Go modules, cached), the project's images from its Dockerfiles (pinned by
digest), the host services pods use (Service Bus emulator, local Teams, PostgreSQL), real KEDA, the Prometheus
Operator's CRDs (so the operator renders its PodMonitor and PrometheusRule), the operator from `manifests/`, the
sample pipeline in namespace `digest-demo`, Prometheus scraping from those PodMonitors and evaluating that rule,
and the load test (`loadtest`). `down` removes all of it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digest_cluster import cluster as cluster_mod
from digest_cluster import images, install, keda, loadtest, prometheus, sample, services
from digest_cluster.layout import REGISTRY, Layout

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the Dockerfiles, `manifests/` and the upstream CRDs the project keeps in `tests/reference/`."""
NAMESPACE = "digest-demo"
PIPELINE = "dev-digest"
QUEUE = "digest-requests"
PARK_QUEUE = "digest-requests-parked"
MAX_DELIVERY = 3
MONITORING_CRDS = ("monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")
SERVICES = ("prometheus", "emulator", "teams", "postgres")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    requests: int = 25
    poison: int = 3
    post_seconds: float = 1.0
    """How long the local Teams takes per post (Teams answers a proactive post in about a second)."""
    concurrency: int = 1
    polling_interval: int = 10
    cooldown_period: int = 30
    max_replicas: int = 4
    messages_per_replica: int = 5
    alert_after: str = "1m"
    output: Path | None = None
    """Where the report goes; default `<state dir>/loadtest`."""


@dataclass(frozen=True)
class Stack:
    cluster: cluster_mod.Cluster
    emulator: services.Emulator
    teams: services.Teams
    postgres: services.Postgres
    prometheus_url: str


def _step(progress: Progress, label: str, action: Callable[[], Any]) -> Any:
    progress(f"up: {label} ...")
    started = time.monotonic()
    result = action()
    progress(f"up: {label}: done in {time.monotonic() - started:.1f} s")
    return result


def pipeline_document(teams: services.Teams, worker: str, options: Options, *, name: str = PIPELINE,
                      namespace: str = NAMESPACE, queue: str = QUEUE) -> dict[str, Any]:
    """The local sample pipeline as the load test runs it (pure)."""
    return sample.pipeline(
        name, namespace, worker, teams, queue=queue, max_delivery=MAX_DELIVERY,
        scaling={"minReplicas": 0, "maxReplicas": options.max_replicas,
                 "messagesPerReplica": options.messages_per_replica, "pollingInterval": options.polling_interval,
                 "cooldownPeriod": options.cooldown_period},
        worker={"concurrency": options.concurrency},
        monitoring={"enabled": True},
        deadLetter={"monitor": {"schedule": "* * * * *"}, "alertAfter": options.alert_after})


def start(options: Options, progress: Progress) -> tuple[Stack, str]:
    """Everything up to an idle pipeline scaled to zero by KEDA; returns the stack and the worker image."""
    if os.geteuid() == 0:  # as root, install what Debian has; anything else is named with its fix
        cluster_mod.install_packages([*cluster_mod.missing_packages(), *missing_host_packages()], progress)
    problems = cluster_mod.missing_prerequisites() + [
        f"missing Debian packages: apt-get install -y {' '.join(missing)}" for missing in [missing_host_packages()]
        if missing]
    if problems:
        raise cluster_mod.ClusterError("cannot run `digestctl up`:\n  - " + "\n  - ".join(problems))
    layout = Layout.default()
    started = _step(progress, "cluster (cold: about 13 minutes of Go builds, then seconds)",
                    lambda: cluster_mod.up(layout, progress))
    store = images.ImageStore(layout.images, REGISTRY)
    python = _step(progress, "Python base image (Debian packages; cold: about a minute)",
                   lambda: images.python_image(store, extra_ca_pem=(layout.ca_dir / "ca.crt").read_bytes()))
    operator = _step(progress, "operator image from Dockerfile.operator", lambda: images.project_image(
        store, "digest-operator", ROOT / "Dockerfile.operator", ROOT, python))
    worker = _step(progress, "worker image from Dockerfile.worker", lambda: images.project_image(
        store, "digest-worker", ROOT / "Dockerfile.worker", ROOT, python))
    for name in SERVICES:
        services.stop(layout, name)
    emulator = _step(progress, "Service Bus emulator", lambda: services.start_emulator(layout, [
        f"{QUEUE}:MaxDeliveryCount={MAX_DELIVERY},LockDuration=PT30S", f"{PARK_QUEUE}:MaxDeliveryCount=10"]))
    teams = _step(progress, "local Teams (connector, token endpoint, page)", lambda: services.start_teams(layout))
    teams.set_latency(options.post_seconds)
    postgres = _step(progress, "PostgreSQL", lambda: services.start_postgres(layout))

    def install_keda() -> None:
        directory = keda.keda_dir(progress)
        keda.install(started, keda.image(store, directory), directory / "config",
                     (layout.ca_dir / "ca.crt").read_bytes())

    _step(progress, "KEDA (cold: about 9 minutes of Go builds)", install_keda)
    _step(progress, "Prometheus Operator CRDs", lambda: install_monitoring_crds(started))
    _step(progress, "operator (kubectl apply --server-side -k manifests/ and manifests/monitoring/)",
          lambda: install_operator(started, operator))

    def apply_pipeline() -> None:
        install.apply_objects(started, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}])
        install.wait_for(started, ("serviceaccount", "default", "-n", NAMESPACE), lambda o: o is not None, 30,
                         "the namespace's default service account")
        install.apply_objects(started, sample.secrets(NAMESPACE, emulator, teams, postgres))
        install.apply_objects(started, [pipeline_document(teams, worker, options)])
        install.wait_for(started, ("dgp", PIPELINE, "-n", NAMESPACE),
                         lambda o: install.is_true(o, "Ready"), 180, f"DigestPipeline {NAMESPACE}/{PIPELINE} Ready")
        wait_idle(started, NAMESPACE, PIPELINE)

    _step(progress, f"sample pipeline {NAMESPACE}/{PIPELINE}", apply_pipeline)
    prometheus_url = _step(progress, "Prometheus (scraping from the PodMonitors, the rendered alert rule)",
                           lambda: start_prometheus(started))
    return Stack(started, emulator, teams, postgres, prometheus_url), worker


HOST_PACKAGES = {"/usr/bin/prometheus": "prometheus", "/usr/bin/pg_ctlcluster": "postgresql"}
"""What the host services need beyond the cluster: Prometheus, PostgreSQL."""


def missing_host_packages() -> list[str]:
    return sorted({package for path, package in HOST_PACKAGES.items() if not Path(path).exists()})


def wait_idle(cluster: cluster_mod.Cluster, namespace: str, pipeline: str, within: float = 180) -> None:
    """Until KEDA has scaled the idle workers to zero and their pods are gone (a pod that KEDA just scaled away
    keeps consuming until the kubelet stops it)."""
    install.wait_for(cluster, ("deployment", f"{pipeline}-worker", "-n", namespace),
                     lambda o: (o or {}).get("spec", {}).get("replicas") == 0, within,
                     "KEDA to scale the idle workers to zero")
    install.wait_for(cluster, ("pods", "-n", namespace, "-l",
                               f"app.kubernetes.io/instance={pipeline},app.kubernetes.io/component=worker"),
                     lambda o: not (o or {}).get("items"), within, "the idle worker pods gone")


def install_monitoring_crds(cluster: cluster_mod.Cluster) -> None:
    install.apply_crds(cluster, [ROOT / "tests" / "reference" / "prometheus-operator" / f for f in MONITORING_CRDS])


def install_operator(cluster: cluster_mod.Cluster, operator: str) -> None:
    """The documented install, plus the operator's PodMonitor (it exports the dead-letter metric of the alert)."""
    install.install_operator(cluster, ROOT / "manifests", operator)
    cluster.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests" / "monitoring"))


def start_prometheus(cluster: cluster_mod.Cluster) -> str:
    """Prometheus on 127.0.0.1:9090 configured from the cluster's PodMonitors and PrometheusRules."""
    monitors = (install.get(cluster, "podmonitors", "--all-namespaces") or {}).get("items", [])
    rules = (install.get(cluster, "prometheusrules", "--all-namespaces") or {}).get("items", [])
    started = prometheus.start(cluster.layout, monitors, rules)
    return str(started.url)


def up(options: Options, progress: Progress, live: Callable[[str], None]) -> tuple[Stack, loadtest.Result]:
    """Start everything and run the load test; the report files are in the result's `output`."""
    stack, _ = start(options, progress)
    conversation = f"19:{uuid.uuid4().hex}@thread.v2"
    sample.seed(stack.postgres, stack.teams, [conversation])
    output = options.output or stack.cluster.layout.root / "loadtest"
    progress(f"up: load test: {options.requests} digest requests + {options.poison} poison messages")
    result = loadtest.run(stack.cluster, stack.emulator, stack.teams, namespace=NAMESPACE, pipeline=PIPELINE,
                          queue=QUEUE, conversation=conversation, requests=options.requests,
                          poison_count=options.poison, output=output, live=live)
    return stack, result


def down(progress: Progress) -> None:
    """Stop the host services and the cluster; undo the host changes (idempotent)."""
    layout = Layout.default()
    for name in SERVICES:
        services.stop(layout, name)
    cluster_mod.down(layout, progress)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
