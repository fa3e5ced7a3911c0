"""`digestctl dlq monitor` against the emulator: the requeue policy across runs (maxRequeues, backoff by
scheduling, circuit breaker, DryRun, park) and the compact report written to the termination message."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusClient
from click.testing import CliRunner, Result

from digest_cli import main
from digest_cli.exitcodes import ExitCode
from digest_dlq.bus import from_received
from digest_sbemulator.server import EmulatorServer
from tests.support.dlqdata import REQUEUE_COUNT, Sent, assert_conserved, dead_letter_all, observe, varied
from tests.support.kubeapi import KubeApi
from tests.support.kubeconfig import write_kubeconfig
from tests.support.samples import minimal


def write_policy(tmp_path: Path, policy: dict[str, Any], queue: str = "orders") -> Path:
    path = tmp_path / "requeue-policy.json"
    path.write_text(json.dumps({"pipeline": {"namespace": "team", "name": "digest"}, "queue": queue,
                                "maxDeliveryCount": 3, "requeuePolicy": policy}))
    return path


def monitor(cs: str, policy: Path, tmp_path: Path) -> tuple[Result, dict[str, Any]]:
    log = tmp_path / "termination-log"
    result = CliRunner().invoke(main, ["dlq", "monitor", "--policy", str(policy), "--connection-string", cs,
                                       "--termination-log", str(log), "-o", "json", "--max-wait", "0.5"],
                                catch_exceptions=False)
    report = json.loads(log.read_text())
    assert json.loads(result.stdout) == report  # small reports are not truncated
    return result, report


def fail_again(cs: str, queue: str, expected: int) -> int:
    """The worker fails the requeued copies again: receive them from the queue and dead-letter them."""
    done = 0
    with ServiceBusClient.from_connection_string(cs) as client, \
            client.get_queue_receiver(queue, prefetch_count=0) as receiver:
        while done < expected:
            got = receiver.receive_messages(max_message_count=100, max_wait_time=5)
            if not got:
                break
            for message in got:
                receiver.dead_letter_message(message, reason="Transient.Exhausted.Http", error_description="again")
                done += 1
    return done


def failed_again(sent: list[Sent]) -> dict[str, tuple[str, str]]:
    """The dead-letter reason and description `fail_again` gives the copies of the transient messages."""
    return {s.message_id: ("Transient.Exhausted.Http", "again") for s in sent if s.reason.startswith("Transient.")}


RETRY = {"name": "retry", "match": {"reason": "Transient.*"}, "action": "Requeue", "maxRequeues": 2,
         "backoff": {"initial": "1ms", "multiplier": 1, "max": "1ms"}}


def test_max_requeues_holds_across_runs_and_nothing_loops(cs: str, sb: EmulatorServer, tmp_path: Path) -> None:
    expected = dead_letter_all(sb, "orders", varied(30))  # 12 transient, 18 others
    policy = write_policy(tmp_path, {"rules": [RETRY], "circuitBreaker": {"threshold": 1000}})
    for run in (1, 2):
        result, report = monitor(cs, policy, tmp_path)
        assert result.exit_code == 0, result.output
        assert report["requeued"] == 12 and report["decisions"]["Requeue"] == 12, (run, report)
        assert report["count"] == 18
        assert fail_again(cs, "orders", 12) == 12
    for _ in (3, 4):  # exhausted: never requeued again, however often the monitor runs
        result, report = monitor(cs, policy, tmp_path)
        assert result.exit_code == 0 and report["requeued"] == 0 and report["count"] == 30
        assert report["skipped"] == {"exhausted": 12, "no-rule": 18}
    found = observe(sb, "orders")
    assert_conserved(expected, found, reasons=failed_again(expected))
    counts = {str(r.original_id): r.number(REQUEUE_COUNT) for r in found.sdk["dlq"]}
    assert counts == {s.message_id: 2 if s.message_id in failed_again(expected) else None for s in expected}


def test_backoff_schedules_the_copy_in_the_future(cs: str, sb: EmulatorServer, tmp_path: Path) -> None:
    expected = dead_letter_all(sb, "orders", varied(10))
    rule = {**RETRY, "backoff": {"initial": "10m", "multiplier": 2, "max": "1h"}}
    before = datetime.datetime.now(datetime.UTC)
    result, report = monitor(cs, write_policy(tmp_path, {"rules": [rule]}), tmp_path)
    assert result.exit_code == 0 and report["requeued"] == 4
    with ServiceBusClient.from_connection_string(cs) as client, client.get_queue_receiver("orders") as receiver:
        scheduled = [from_received(m) for m in receiver.peek_messages(max_message_count=50, sequence_number=1)]
        assert receiver.receive_messages(max_message_count=10, max_wait_time=1) == []  # nothing is active yet
    assert len(scheduled) == 4
    for message in scheduled:
        assert message.annotations.get("x-opt-message-state") == 2  # scheduled
        assert message.enqueued_time is not None
        assert message.enqueued_time >= before + datetime.timedelta(minutes=10) - datetime.timedelta(seconds=1)
    assert_conserved(expected, observe(sb, "orders"))  # the scheduled copies are faithful too


def test_circuit_breaker_opens_pauses_requeues_and_keeps_parking(cs: str, sb: EmulatorServer, tmp_path: Path) \
        -> None:
    expected = dead_letter_all(sb, "orders", varied(30))
    policy = write_policy(tmp_path, {
        "rules": [{"name": "poison", "match": {"reason": "Poison.*"}, "action": "Park"}, {**RETRY, "maxRequeues": 5}],
        "parkQueue": "parked", "circuitBreaker": {"threshold": 5, "window": "1h"}})
    result, report = monitor(cs, policy, tmp_path)
    assert report["requeued"] == 12 and report["parked"] == 6 and report["circuit"]["state"] == "Closed"
    fail_again(cs, "orders", 12)
    result, report = monitor(cs, policy, tmp_path)
    assert result.exit_code == 0
    assert report["circuit"] == {"state": "Open", "returned": 12, "threshold": 5}
    assert report["requeued"] == 0 and report["skipped"]["circuit-open"] == 12 and report["count"] == 24
    found = observe(sb, "orders", "parked")
    assert_conserved(expected, found, reasons=failed_again(expected))
    assert found.ids("parked") == sorted(s.message_id for s in expected if s.reason.startswith("Poison."))


def test_dry_run_reports_and_changes_nothing(cs: str, sb: EmulatorServer, tmp_path: Path) -> None:
    expected = dead_letter_all(sb, "orders", varied(15))
    before = CliRunner().invoke(main, ["dlq", "list", "-o", "json", "--connection-string", cs, "--queue", "orders"])
    policy = write_policy(tmp_path, {"mode": "DryRun", "rules": [RETRY]})
    result, report = monitor(cs, policy, tmp_path)
    assert result.exit_code == 0 and report["mode"] == "DryRun"
    assert report["decisions"] == {"Requeue": 6, "Skip": 9} and report["requeued"] == 0 and report["count"] == 15
    assert report["reasons"]["Requeue"] == {"Transient.Exhausted.Http": 3, "Transient.Exhausted.Teams": 3}
    after = CliRunner().invoke(main, ["dlq", "list", "-o", "json", "--connection-string", cs, "--queue", "orders"])

    def strip(text: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "ageSeconds"} for row in json.loads(text)]

    assert strip(before.stdout) == strip(after.stdout)
    assert_conserved(expected, observe(sb, "orders"))  # all 15 still in the DLQ, every field as sent


def test_report_shape_and_bad_policy(cs: str, sb: EmulatorServer, tmp_path: Path) -> None:
    dead_letter_all(sb, "orders", varied(3))
    _, report = monitor(cs, write_policy(tmp_path, {}), tmp_path)
    assert set(report) >= {"v", "pipeline", "queue", "time", "mode", "count", "oldestEnqueuedTime",
                           "oldestAgeSeconds", "decisions", "reasons", "requeued", "parked", "left", "failed",
                           "circuit", "errors"}
    assert report["pipeline"] == "team/digest" and report["count"] == 3 and report["oldestAgeSeconds"] >= 0
    bad = write_policy(tmp_path, {"rules": [{"name": "x", "action": "Explode"}]})
    result = CliRunner().invoke(main, ["dlq", "monitor", "--policy", str(bad), "--connection-string", cs])
    assert result.exit_code == ExitCode.INVALID_INPUT and "requeuePolicy.rules.0.action" in result.stderr
    both = CliRunner().invoke(main, ["dlq", "monitor", "--connection-string", cs])
    assert both.exit_code == ExitCode.USAGE


async def test_monitor_reads_the_policy_from_a_pipeline(kube_api: KubeApi, cs: str, sb: EmulatorServer,
                                                        tmp_path: Path) -> None:
    await asyncio.to_thread(dead_letter_all, sb, "orders", varied(10))
    body = minimal(serviceBus={"namespace": "contoso.servicebus.windows.net", "queue": "orders",
                               "auth": {"workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"}}},
                   deadLetter={"requeuePolicy": {"mode": "DryRun", "rules": [RETRY]}})
    await kube_api.create("/apis/digest.dev/v1alpha1/namespaces/default/digestpipelines", body)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_api.url)

    def run(pipeline: str) -> Result:
        return CliRunner().invoke(main, ["dlq", "monitor", "--pipeline", pipeline, "--connection-string", cs,
                                         "-o", "json", "--max-wait", "0.5"], env={"KUBECONFIG": str(kubeconfig)})

    result = await asyncio.to_thread(run, "default/demo")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pipeline"] == "default/demo" and report["queue"] == "orders" and report["mode"] == "DryRun"
    assert report["decisions"] == {"Requeue": 4, "Skip": 6}
    assert (await asyncio.to_thread(run, "default/nope")).exit_code == ExitCode.NOT_FOUND
    assert (await asyncio.to_thread(run, "no-slash")).exit_code == ExitCode.USAGE
