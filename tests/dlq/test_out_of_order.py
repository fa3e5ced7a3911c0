"""Every toolkit view of a dead-letter queue that filled out of sequence order (messages fail at different times):
list, stats, export, purge selection and the monitor's count each see every message exactly once, and stats and
the monitor say where their count came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient
from click.testing import CliRunner, Result

from digest_cli import main
from digest_sbemulator.server import EmulatorServer
from tests.support.dlqdata import (
    Sent,
    assert_conserved,
    assert_exact,
    dead_letter_all,
    default_ttl_ms,
    from_export,
    observe,
    varied,
)

COUNT = 600
"""Above the 250-per-peek cap."""
FAST = ["--max-wait", "0.5"]


def dlq(cs: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["dlq", *args, "--connection-string", cs, "--queue", "orders", *FAST],
                              catch_exceptions=False)


@pytest.fixture(params=["reversed", "interleaved"])
def dead(request: pytest.FixtureRequest, sb: EmulatorServer) -> list[Sent]:
    return dead_letter_all(sb, "orders", varied(COUNT), order=request.param)


def test_list_shows_every_message_once_in_sequence_order(cs: str, dead: list[Sent]) -> None:
    result = dlq(cs, "list", "-o", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    seqs = [r["sequenceNumber"] for r in rows]
    assert len(rows) == COUNT and seqs == sorted(set(seqs))
    assert sorted(r["messageId"] for r in rows) == sorted(s.message_id for s in dead)


def test_stats_counts_by_peek_and_by_the_management_api_and_says_which(cs: str, sb: EmulatorServer,
                                                                        dead: list[Sent]) -> None:
    peeked = json.loads(dlq(cs, "stats", "-o", "json").stdout)
    assert peeked["selected"] == COUNT and sum(g["count"] for g in peeked["groups"]) == COUNT
    assert (peeked["runtime"]["source"], peeked["runtime"]["deadLetterMessageCount"]) == ("peek", COUNT)
    managed = json.loads(dlq(cs, "stats", "-o", "json", "--ca-file", str(sb.tls.ca_file)).stdout)
    assert (managed["runtime"]["source"], managed["runtime"]["deadLetterMessageCount"]) == ("management", COUNT)


def test_export_writes_each_message_once(cs: str, sb: EmulatorServer, tmp_path: Path, dead: list[Sent]) -> None:
    path = tmp_path / "dlq.jsonl"
    assert dlq(cs, "export", "--file", str(path)).exit_code == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["sequenceNumber"] for r in records}) == COUNT
    assert_exact(dead, {"export": [from_export(r) for r in records]}, default_ttl_ms=default_ttl_ms(sb, "orders"))


def test_purge_selects_and_removes_exactly_the_matching_messages(cs: str, sb: EmulatorServer, dead: list[Sent]) \
        -> None:
    listed = [json.loads(line) for line in dlq(cs, "list", "-o", "jsonl", "--reason", "Poison.*").stdout.splitlines()]
    poison = {r["messageId"] for r in listed}
    assert 0 < len(poison) < COUNT
    summary = json.loads(dlq(cs, "purge", "--reason", "Poison.*", "--yes", "-o", "json").stdout)
    assert (summary["purged"], summary["failed"], summary["left"]) == (len(poison), 0, 0)
    assert poison == {s.message_id for s in dead if s.reason.startswith("Poison.")}
    assert_conserved([s for s in dead if s.message_id not in poison], observe(sb, "orders"))  # the rest untouched


def _monitor(cs: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    policy = tmp_path / "requeue-policy.json"
    policy.write_text(json.dumps({"pipeline": {"namespace": "team", "name": "digest"}, "queue": "orders",
                                  "maxDeliveryCount": 3, "requeuePolicy": {"mode": "Active", "rules": []}}))
    result = CliRunner().invoke(main, ["dlq", "monitor", "--policy", str(policy), "--connection-string", cs,
                                       "-o", "json", *FAST, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_monitor_counts_every_message_once_and_names_its_source(cs: str, sb: EmulatorServer, tmp_path: Path,
                                                                     dead: list[Sent]) -> None:
    peeked = _monitor(cs, tmp_path)
    assert (peeked["count"], peeked["countSource"]) == (COUNT, "peek")
    managed = _monitor(cs, tmp_path, "--ca-file", str(sb.tls.ca_file))
    assert (managed["count"], managed["countSource"]) == (COUNT, "management")


def test_the_dead_letter_queue_of_a_requeue_target_filled_out_of_order_is_walked_once(cs: str,
                                                                                      dead: list[Sent]) -> None:
    """Requeued to another queue, the copies fail again there in another order: that queue's DLQ is walked once."""
    moved = CliRunner().invoke(main, ["dlq", "requeue", "--connection-string", cs, "--queue", "orders", "--to",
                                      "other", "--yes", "-o", "json", *FAST], catch_exceptions=False)
    assert moved.exit_code == 0, moved.output
    with ServiceBusClient.from_connection_string(cs) as client, \
            client.get_queue_receiver("other", prefetch_count=0) as receiver:
        held: list[Any] = []
        while len(held) < COUNT:
            page = receiver.receive_messages(max_message_count=100, max_wait_time=5)
            assert page, f"only {len(held)} of {COUNT} requeued copies arrived"
            held += page
        for received in held[::-1]:
            receiver.dead_letter_message(received, reason="Permanent.Again")
    copies = sorted(str(m.message_id) for m in held)
    assert len(set(copies)) == COUNT
    result = CliRunner().invoke(main, ["dlq", "list", "-o", "jsonl", "--connection-string", cs, "--queue", "other",
                                       *FAST], catch_exceptions=False)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    seqs = [r["sequenceNumber"] for r in rows]
    assert len(rows) == COUNT and seqs == sorted(set(seqs))
    assert sorted(r["messageId"] for r in rows) == copies
