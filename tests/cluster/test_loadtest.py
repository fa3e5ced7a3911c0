"""The team's load test (`digestctl up`'s scenario) on the tier's cluster: 25 digest requests and 3 poison
messages through real KEDA and real worker pods; every request posted exactly once, the poison dead-lettered with
precise reasons, and the dead-letter alert evaluated by a real Prometheus: firing once the dead-letter queue has
held them for `alertAfter`, resolved after the monitor parked them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

from digest_cluster import install, loadtest, prometheus, sample, stack
from digest_cluster.cluster import Cluster
from digest_cluster.services import Emulator, Postgres, Teams
from tests.cluster.conftest import LOAD_QUEUE, Images
from tests.cluster.helpers import as_json

REQUESTS, POISON = 25, 3
OPTIONS = stack.Options(requests=REQUESTS, poison=POISON, polling_interval=5, cooldown_period=15,
                        alert_after="20s")
ALERT = "DigestPipelineDeadLetters"


@pytest.fixture(scope="session")
def monitoring_installed(cluster: Cluster, operator_installed: str) -> None:
    """The Prometheus Operator's CRDs and the operator's PodMonitor (manifests/monitoring)."""
    stack.install_monitoring_crds(cluster)
    cluster.kubectl("apply", "--server-side", "-k", str(stack.ROOT / "manifests" / "monitoring"))


@pytest.fixture
def prometheus_for(cluster: Cluster) -> Iterator[list[prometheus.Prometheus]]:
    started: list[prometheus.Prometheus] = []
    yield started
    for server in started:
        server.stop()


def _alerts(server: prometheus.Prometheus, pipeline: str) -> list[dict[str, object]]:
    return [a for a in server.alerts() if a.get("labels", {}).get("alertname") == ALERT
            and a.get("labels", {}).get("pipeline") == pipeline]


def test_load_test_posts_every_request_once_and_the_dead_letter_alert_fires_and_resolves(
        cluster: Cluster, project_images: Images, operator_installed: str, keda_installed: str,
        monitoring_installed: None, emulator: Emulator, teams: Teams, postgres: Postgres, namespace: str,
        prometheus_for: list[prometheus.Prometheus], tmp_path: Path) -> None:
    conversation = f"19:{uuid.uuid4().hex}@thread.v2"
    sample.seed(postgres, teams, [conversation])
    install.apply_objects(cluster, sample.secrets(namespace, emulator, teams, postgres))
    document = stack.pipeline_document(teams, project_images.worker, OPTIONS, name="load", namespace=namespace,
                                       queue=LOAD_QUEUE)
    install.apply_objects(cluster, [document])
    stack.wait_idle(cluster, namespace, "load")
    rules = install.wait_for(cluster, ("prometheusrules", "-n", namespace), lambda o: bool((o or {}).get("items")),
                             60, "the rendered PrometheusRule")["items"]
    monitors = [*(install.get(cluster, "podmonitors", "-n", namespace) or {}).get("items", []),
                *(install.get(cluster, "podmonitors", "-n", install.OPERATOR_NAMESPACE) or {}).get("items", [])]
    server = prometheus.start(cluster.layout, monitors, rules, scrape_interval="2s", evaluation_interval="2s")
    prometheus_for.append(server)

    teams.set_latency(OPTIONS.post_seconds)
    try:
        result = loadtest.run(cluster, emulator, teams, namespace=namespace, pipeline="load", queue=LOAD_QUEUE,
                              conversation=conversation, requests=REQUESTS, poison_count=POISON,
                              output=tmp_path / "report", within=300)
    finally:
        teams.set_latency(0)

    # every request posted exactly once (the local Teams' own record of what it received)
    titles = [d["card"]["title"] for d in teams.delivered()  # type: ignore[index]
              if d.get("conversation_id") == conversation]
    assert sorted(titles) == sorted(result.run.requests), titles
    # the poison, and only it, dead-lettered with the worker's precise reasons (read from the emulator here)
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client, \
            client.get_queue_receiver(LOAD_QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        letters = {str(m.message_id): (m.dead_letter_reason, str(m.dead_letter_error_description))
                   for m in dlq.peek_messages(max_message_count=50, sequence_number=0)}
    assert set(letters) == set(result.run.poison), letters
    assert {reason for reason, _ in letters.values()} == {"Permanent.InvalidMessage"}, letters
    descriptions = sorted(description for _, description in letters.values())
    assert any("not JSON" in d for d in descriptions) and any("max_items" in d for d in descriptions) and any(
        "date_range_days" in d for d in descriptions), descriptions
    # the report files a user opens
    summary = json.loads((result.output / "summary.json").read_text())
    assert summary["summary"]["digest requests"].startswith(f"{REQUESTS} sent, {REQUESTS} posted, 0 duplicate")
    assert "<svg" in (result.output / "timeline.html").read_text()
    assert result.milestones.back_to_zero is not None, as_json([s.__dict__ for s in result.samples[-5:]])

    # the alert: the monitor's count reaches the operator's metric; Prometheus fires after alertAfter (20 s)
    def firing() -> list[dict[str, object]]:
        return [a for a in _alerts(server, "load") if a.get("state") == "firing"]

    _wait(lambda: bool(firing()), 300, "the dead-letter alert firing", server)
    assert firing()[0]["labels"]["severity"] == "warning", firing()  # type: ignore[index]
    # resolved once the policy parks the poison and the count returns to zero
    cluster.kubectl("patch", "dgp", "load", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {
        "deadLetter": {"requeuePolicy": {"parkQueue": f"{LOAD_QUEUE}-parked", "rules": [
            {"name": "poison", "match": {"reason": "Permanent.*"}, "action": "Park"}]}}}}))
    _wait(lambda: not _alerts(server, "load"), 300, "the dead-letter alert resolved", server)


def _wait(check: Callable[[], bool], within: float, what: str, server: prometheus.Prometheus) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; alerts: {as_json(server.alerts())}"
        time.sleep(2)
