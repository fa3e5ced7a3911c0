"""Real KEDA scaling real worker pods from the emulator's queue depth, through the ScaledObject and
TriggerAuthentication the operator renders: activation 0 → 1, the HPA at ceil(active / messagesPerReplica)
within [min, max], and back to zero after cooldownPeriod."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from azure.servicebus.management import ServiceBusAdministrationClient

from digest_cluster import install, loadtest, sample, stack
from digest_cluster.cluster import Cluster
from digest_cluster.services import Emulator, Postgres, Teams
from digest_cluster.stack import MAX_DELIVERY
from tests.cluster.conftest import SCALING_QUEUE, Images
from tests.cluster.helpers import as_json

REQUESTS, PER_REPLICA, MAX_REPLICAS, POLLING, COOLDOWN = 25, 5, 4, 5, 20
POST_SECONDS = 3.0  # slow posts keep the queue deep until the HPA's first decisions (its sync period is 15 s)


def _replicas(cluster: Cluster, namespace: str) -> int:
    deployment = install.get(cluster, "deployment", "scaled-worker", "-n", namespace) or {}
    return int(deployment.get("spec", {}).get("replicas", -1))


def test_keda_scales_workers_from_the_queue_depth_and_back_to_zero(
        cluster: Cluster, project_images: Images, operator_installed: str, keda_installed: str,
        emulator: Emulator, teams: Teams, postgres: Postgres, namespace: str) -> None:
    conversation = f"19:{uuid.uuid4().hex}@thread.v2"
    sample.seed(postgres, teams, [conversation])
    install.apply_objects(cluster, sample.secrets(namespace, emulator, teams, postgres))
    install.apply_objects(cluster, [sample.pipeline(
        "scaled", namespace, project_images.worker, teams, queue=SCALING_QUEUE, max_delivery=MAX_DELIVERY,
        scaling={"minReplicas": 0, "maxReplicas": MAX_REPLICAS, "messagesPerReplica": PER_REPLICA,
                 "pollingInterval": POLLING, "cooldownPeriod": COOLDOWN},
        worker={"concurrency": 1})])
    # KEDA takes the rendered ScaledObject (its connection from the TriggerAuthentication's Secret) and, with an
    # empty queue, scales the worker Deployment to zero
    install.wait_for(cluster, ("scaledobject", "scaled", "-n", namespace),
                     lambda o: install.is_true(o, "Ready"), 120, "KEDA: ScaledObject Ready")
    stack.wait_idle(cluster, namespace, "scaled")

    teams.set_latency(POST_SECONDS)
    try:
        run = loadtest.send(emulator, SCALING_QUEUE, conversation, REQUESTS, 0)
        sent = time.monotonic()
        samples: list[dict[str, Any]] = []
        activated_after: float | None = None
        with ServiceBusAdministrationClient.from_connection_string(
                emulator.connection_string, connection_verify=str(emulator.ca_file)) as admin:
            deadline = sent + 240
            while True:
                now = time.monotonic() - sent
                replicas = _replicas(cluster, namespace)
                if activated_after is None and replicas >= 1:
                    activated_after = now
                hpa = install.get(cluster, "hpa", "keda-hpa-scaled", "-n", namespace)
                active = admin.get_queue_runtime_properties(SCALING_QUEUE).active_message_count
                delivered = {d["card"]["title"] for d in teams.delivered()  # type: ignore[index]
                             if d.get("conversation_id") == conversation}
                samples.append({"t": round(now, 1), "replicas": replicas, "active": active,
                                "delivered": len(delivered), "hpa": (hpa or {}).get("status")})
                if len(delivered) == REQUESTS and replicas == 0:
                    break
                assert time.monotonic() < deadline, as_json(samples[-20:])
                time.sleep(1)
    finally:
        teams.set_latency(0)

    # activation: from zero within one polling interval (plus KEDA's reconcile of the Deployment)
    assert activated_after is not None and activated_after <= POLLING + 10, as_json(samples[:20])
    # scale-out: the HPA asked for ceil(active / messagesPerReplica) replicas, capped at maxReplicas
    decisions = {d for s in samples if (d := _decision(s["hpa"])) is not None}
    scale_ups = [(current, total, desired) for current, total, desired in decisions if desired > current]
    assert scale_ups, as_json(samples)
    for current, total, desired in scale_ups:
        assert desired == min(MAX_REPLICAS, math.ceil(total / PER_REPLICA)), (current, total, desired)
    # the backlog was deep enough for the cap, as in the team's load test (0 → 4)
    assert max(s["replicas"] for s in samples) == MAX_REPLICAS, as_json(samples)
    # every request posted exactly once
    titles = [d["card"]["title"] for d in teams.delivered()  # type: ignore[index]
              if d.get("conversation_id") == conversation]
    assert sorted(titles) == sorted(run.requests)
    # back to zero once the queue stayed empty for cooldownPeriod
    # (KEDA counts the cooldown from its last check that saw active messages)
    last_active = max(s["t"] for s in samples if s["active"] > 0)
    zero = next(s["t"] for s in samples if s["t"] > last_active and s["replicas"] == 0)
    assert COOLDOWN - 2 <= zero - last_active <= COOLDOWN + POLLING + 30, as_json(samples)


def _decision(status: dict[str, Any] | None) -> tuple[int, float, int] | None:
    """(current replicas, total metric value, desired replicas) from an HPA status with an AverageValue target."""
    if not status or not status.get("currentMetrics"):
        return None
    external = status["currentMetrics"][0].get("external") or {}
    average = external.get("current", {}).get("averageValue")
    if average is None:
        return None
    current = int(status.get("currentReplicas", 0))
    return current, _quantity(average) * current, int(status.get("desiredReplicas", 0))


def _quantity(text: str) -> float:
    """A Kubernetes quantity as the HPA writes averages: `4`, `2500m`."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
