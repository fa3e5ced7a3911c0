"""The local sample pipeline on real pods: worker pods from the worker image (by digest) consume from the
emulator and deliver into the local Teams; the DLQ monitor CronJob's real Jobs report into the status; Pod
Security `restricted` admits every pod; deleting the pipeline removes everything."""

from __future__ import annotations

import json
import uuid

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties

from digest_cluster import install, sample
from digest_cluster.cluster import Cluster
from digest_cluster.services import Emulator, Postgres, Teams
from digest_cluster.stack import MAX_DELIVERY, PARK_QUEUE, QUEUE
from digest_worker.producer import request_body
from tests.cluster.conftest import Images
from tests.cluster.helpers import as_json, events, http_get, pods, ready

GOOD, POISON = 5, 2


def test_sample_pipeline_delivers_and_the_monitor_parks_poison(
        cluster: Cluster, project_images: Images, operator_installed: str, keda_crds: None, emulator: Emulator,
        teams: Teams, postgres: Postgres, namespace: str) -> None:
    conversation = f"19:{uuid.uuid4().hex}@thread.v2"
    sample.seed(postgres, teams, [conversation])
    install.apply_objects(cluster, sample.secrets(namespace, emulator, teams, postgres))
    install.apply_objects(cluster, [sample.pipeline(
        "dev-digest", namespace, project_images.worker, teams, queue=QUEUE, max_delivery=MAX_DELIVERY,
        monitor_schedule="* * * * *", park_queue=PARK_QUEUE)])
    _monitor_suspended(cluster, namespace, True)

    run = uuid.uuid4().hex[:8]
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client, \
            client.get_queue_sender(QUEUE) as sender:
        sender.send_messages([ServiceBusMessage(request_body(f"{run}-{i}", conversation, title=f"{run}-{i}"),
                                                message_id=f"{run}-{i}", content_type="application/json")
                              for i in range(GOOD)])
        sender.send_messages([AmqpAnnotatedMessage(data_body=b"{not json", properties=AmqpMessageProperties(
            message_id=f"{run}-poison-{i}")) for i in range(POISON)])

    # a worker pod of the pipeline runs the worker image by digest and is Ready on /readyz
    selector = "app.kubernetes.io/instance=dev-digest,app.kubernetes.io/component=worker"
    install.wait_for(cluster, ("pods", "-n", namespace, "-l", selector),
                     lambda o: bool(o and o["items"] and all(ready(p) for p in o["items"])), 180, "a Ready worker")
    worker = pods(cluster, namespace, selector)[0]
    assert worker["spec"]["containers"][0]["image"] == project_images.worker
    assert http_get(f"http://{worker['status']['podIP']}:8080/readyz")[0] == 200

    # every good request is posted once into the conversation, through the bot's token
    def delivered() -> list[str]:
        return [str(d["card"]["title"]) for d in teams.delivered()  # type: ignore[index]
                if d.get("conversation_id") == conversation]

    install.wait_for(cluster, ("dgp", "dev-digest", "-n", namespace), lambda _: len(delivered()) >= GOOD, 120,
                     f"{GOOD} digests in the local Teams (got {delivered()})")
    assert sorted(delivered()) == sorted(f"{run}-{i}" for i in range(GOOD))

    # the poison messages are dead-lettered by the worker (the monitor is suspended until they are there)
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client, \
            client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        install.wait_for(cluster, ("dgp", "dev-digest", "-n", namespace),
                         lambda _: len(dlq.peek_messages(max_message_count=50, sequence_number=0)) == POISON, 60,
                         "the poison messages in the dead-letter queue")
    # then the CronJob controller starts one real monitor Job; suspended again at once, so its report is the last
    _monitor_suspended(cluster, namespace, False)
    install.wait_for(cluster, ("jobs", "-n", namespace), lambda o: any(
        j["metadata"].get("ownerReferences", [{}])[0].get("kind") == "CronJob" for j in (o or {}).get("items", [])),
        90, "a Job started by the monitor CronJob")
    _monitor_suspended(cluster, namespace, True)
    status = install.wait_for(
        cluster, ("dgp", "dev-digest", "-n", namespace),
        lambda o: ((o or {}).get("status", {}).get("deadLetter", {}).get("lastRun") or {}).get("parked") == POISON,
        150, "the monitor report (termination message) in status.deadLetter, having parked the poison messages")
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client:
        with client.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
            assert dlq.peek_messages(max_message_count=50) == []
        with client.get_queue_receiver(PARK_QUEUE) as parked:
            ids = {str(m.message_id) for m in parked.peek_messages(max_message_count=50)}
    assert ids == {f"{run}-poison-{i}" for i in range(POISON)}
    jobs = install.get(cluster, "jobs", "-n", namespace) or {}
    monitor_jobs = [j for j in jobs.get("items", []) if j["metadata"].get("ownerReferences", [{}])[0].get("kind")
                    == "CronJob"]
    assert monitor_jobs, as_json(jobs)
    reasons = {e["reason"] for e in events(cluster, namespace, "dev-digest")}
    assert "DeadLettersParked" in reasons, reasons
    assert status["status"]["deadLetter"]["count"] == 0

    # what users see: kubectl get / describe
    table = cluster.kubectl("get", "dgp", "dev-digest", "-n", namespace).stdout
    assert "True" in table.splitlines()[1], table
    described = cluster.kubectl("describe", "dgp", "dev-digest", "-n", namespace).stdout
    assert "DeadLettersParked" in described and "Ready" in described, described


def _monitor_suspended(cluster: Cluster, namespace: str, suspend: bool) -> None:
    cluster.kubectl("patch", "dgp", "dev-digest", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"deadLetter": {"monitor": {"suspend": suspend}}}}))
    install.wait_for(cluster, ("cronjob", "dev-digest-dlq-monitor", "-n", namespace),
                     lambda o: o is not None and o["spec"].get("suspend") is suspend, 60,
                     f"the monitor CronJob with suspend={suspend}")


def test_deleting_the_pipeline_removes_every_child(cluster: Cluster, project_images: Images,
                                                    operator_installed: str, keda_crds: None, teams: Teams,
                                                    namespace: str) -> None:
    install.apply_objects(cluster, [sample.pipeline("gone", namespace, project_images.worker, teams, queue=QUEUE,
                                                    max_delivery=MAX_DELIVERY, monitor_schedule="*/5 * * * *")])
    kinds = ("deployment", "scaledobject", "triggerauthentication", "cronjob", "configmap", "serviceaccount")
    selector = "app.kubernetes.io/instance=gone"
    install.wait_for(cluster, ("deployment,scaledobject,triggerauthentication,cronjob", "-n", namespace, "-l",
                               selector), lambda o: len((o or {}).get("items", [])) == 4, 90, "the children")
    cluster.kubectl("delete", "dgp", "gone", "-n", namespace, "--timeout=90s", timeout=100)
    left = install.wait_for(cluster, (",".join(kinds) + ",pods", "-n", namespace, "-l", selector),
                            lambda o: not (o or {}).get("items"), 120, "garbage collection of every child")
    assert left.get("items") == []
    assert install.get(cluster, "dgp", "gone", "-n", namespace) is None


def test_restricted_pod_security_is_enforced_where_the_pods_run(cluster: Cluster, namespace: str) -> None:
    """The tier's namespaces (and digest-system) enforce `restricted`: a pod that is not compliant is refused,
    so the operator, worker and monitor pods that run in them passed that admission."""
    refused = cluster.kubectl("run", "root-pod", "-n", namespace, "--image=127.0.0.1:5000/pause:3.10",
                              "--restart=Never", check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity \"restricted:latest\"" in refused.stderr, refused.stderr
    labels = json.loads(cluster.kubectl("get", "namespace", install.OPERATOR_NAMESPACE, "-o", "json").stdout)[
        "metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
