"""`digestctl dlq` against the emulator with the real SDK: conservation of hundreds of varied messages (each exactly
once, every field as sent, through the SDK and in the stored encoding: `tests.support.dlqdata`), under injected
faults (failing sends, lost locks, dropped connections), oversize messages, confirmation rules, JSON outputs and
exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from digest_cli import main
from digest_cli.exitcodes import ExitCode
from digest_dlq import bus, ops
from digest_dlq.select import Selection
from digest_sbemulator.server import EmulatorServer
from tests.support.dlqdata import (
    ORIGINAL_ID,
    REQUEUE_COUNT,
    assert_conserved,
    assert_exact,
    dead_letter_all,
    from_export,
    now,
    observe,
    varied,
)

FAST = ["--max-wait", "0.5"]  # the emulator hands out what it has at once; no need to wait 2 s for an empty DLQ


def dlq(cs: str, *args: str, queue: str = "orders") -> Result:
    return CliRunner().invoke(main, ["dlq", *args, "--connection-string", cs, "--queue", queue, *FAST],
                              catch_exceptions=False)


def ctx(cs: str, queue: str, retries: int = 3) -> ops.Context:
    return ops.Context(bus.Endpoint(connection_string=cs), queue, {"retry_total": retries})


def fast(**kwargs: Any) -> ops.RequeueOptions:
    return ops.RequeueOptions(max_wait=0.5, **kwargs)


def test_requeue_conserves_hundreds_of_varied_messages(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "orders", varied(300))
    result = dlq(cs, "requeue", "--reason", "Transient.*", "--yes", "-o", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"requeued", "parked", "purged", "skipped", "left", "failed", "leftReasons",
                            "failedReasons", "errors"}  # the stable JSON summary of every destructive command
    assert summary["requeued"] == 120 and summary["failed"] == 0 and summary["left"] == 0
    found = observe(sb, "orders")
    assert_conserved(expected, found)  # every field of all 300, the 120 copies without DeadLetterReason
    transient = {s.message_id for s in expected if s.reason.startswith("Transient.")}
    assert found.ids("queue") == sorted(transient) and found.ids("dlq") == sorted({s.message_id for s in expected}
                                                                                   - transient)
    # the fixture has no management API: auto regenerates deterministic ids, and this is the first requeue
    assert all(r.is_copy and r.number(REQUEUE_COUNT) == 1 and r.message_id == f"{r.text(ORIGINAL_ID)}:rq1"
               for r in found.sdk["queue"])


def test_list_walks_past_the_peek_cap_and_changes_nothing(cs: str, sb: EmulatorServer) -> None:
    dead_letter_all(sb, "orders", varied(320))
    before = dlq(cs, "list", "-o", "json")
    assert before.exit_code == 0
    rows = json.loads(before.stdout)
    assert len(rows) == 320 and [r["sequenceNumber"] for r in rows] == sorted(r["sequenceNumber"] for r in rows)
    assert set(rows[0]) == {"sequenceNumber", "messageId", "enqueuedTime", "ageSeconds", "deliveryCount", "reason",
                            "description", "size", "requeueCount"}
    assert all(r["deliveryCount"] == 0 for r in json.loads(dlq(cs, "list", "-o", "json").stdout))
    filtered = dlq(cs, "list", "--reason", "Poison.*", "--description", "attempt", "--limit", "10", "-o", "jsonl")
    lines = [json.loads(line) for line in filtered.stdout.splitlines()]
    assert len(lines) == 10 and {r["reason"] for r in lines} == {"Poison.BadJson"}
    table = dlq(cs, "list", "--from-sequence", "5", "--to-sequence", "7")
    assert table.stdout.splitlines()[0].split()[:3] == ["SEQ", "MESSAGE-ID", "ENQUEUED"]
    assert len(table.stdout.splitlines()) == 4


def test_show_and_stats(cs: str, sb: EmulatorServer) -> None:
    dead_letter_all(sb, "orders", varied(12))
    shown = dlq(cs, "show", "1", "-o", "json")
    doc = json.loads(shown.stdout)
    assert doc["body"]["encoding"] == "json" and doc["body"]["value"]["i"] == 0
    assert doc["applicationProperties"]["DeadLetterReason"] == "Transient.Exhausted.Http"
    assert json.loads(dlq(cs, "show", "2", "-o", "json").stdout)["body"]["encoding"] == "amqp-sequence"
    assert dlq(cs, "show", "999").exit_code == ExitCode.NOT_FOUND
    stats = json.loads(dlq(cs, "stats", "-o", "json").stdout)
    assert set(stats) == {"queue", "selected", "groups", "runtime"}
    assert set(stats["groups"][0]) == {"reason", "description", "count", "oldestAgeSeconds", "newestAgeSeconds",
                                       "bytes"}
    assert stats["selected"] == 12 and stats["runtime"]["deadLetterMessageCount"] == 12
    assert stats["runtime"]["source"] == "peek"
    assert {g["reason"]: g["count"] for g in stats["groups"]}["Poison.BadJson"] == 2
    assert all(g["description"].endswith("attempt failed") for g in stats["groups"])  # first line only


def test_stats_reads_runtime_counts_from_the_management_api_given_the_emulators_ca(cs: str, sb: EmulatorServer) \
        -> None:
    dead_letter_all(sb, "orders", varied(5))
    stats = json.loads(dlq(cs, "stats", "-o", "json", "--ca-file", str(sb.tls.ca_file)).stdout)
    assert stats["runtime"]["source"] == "management"
    assert (stats["runtime"]["deadLetterMessageCount"], stats["runtime"]["activeMessageCount"]) == (5, 0)
    facts = bus.queue_facts(bus.Endpoint(connection_string=cs, ca_file=str(sb.tls.ca_file)), "orders")
    assert facts.source == "management"
    assert facts.max_delivery_count is not None


def test_send_failure_mid_run_leaves_those_messages_and_a_rerun_finishes(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "orders", varied(200, big_every=7))  # 40 KB messages force several batches
    sb.fail_next_sends(1)
    first = dlq(cs, "requeue", "--yes", "--retries", "0", "-o", "json")
    assert first.exit_code == ExitCode.PARTIAL
    summary = json.loads(first.stdout)
    assert summary["failed"] > 0 and summary["requeued"] + summary["failed"] == 200
    found = observe(sb, "orders")
    assert_conserved(expected, found)
    assert (found.count("queue"), found.count("dlq")) == (summary["requeued"], summary["failed"])
    second = dlq(cs, "requeue", "--yes", "-o", "json")
    assert second.exit_code == 0 and json.loads(second.stdout)["requeued"] == summary["failed"]
    found = observe(sb, "orders")
    assert_conserved(expected, found)
    assert not found.sdk["dlq"]


def test_lock_lost_after_send_is_reported_and_the_rerun_does_not_duplicate(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "dedupe", varied(150))
    fired: list[int] = []

    def lose_locks() -> None:
        if not fired:
            fired.append(sb.expire_locks("dedupe"))

    first = ops.requeue(ctx(cs, "dedupe"), Selection(), fast(after_send=lose_locks), now())
    assert fired and fired[0] > 0
    assert first.failed and set(first.failed.values()) == {"lock lost after send (original not completed)"}
    second = ops.requeue(ctx(cs, "dedupe"), Selection(), fast(), now())
    assert second.clean and len(second.requeued) == 150 - len(first.requeued)
    found = observe(sb, "dedupe")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)  # the resent copies had the same ids and were deduplicated


def test_connection_dropped_mid_run_then_rerun_finishes(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "dedupe", varied(200, big_every=5))
    dropped: list[int] = []

    def drop() -> None:
        if not dropped:
            dropped.append(sb.drop_connections())

    first = ops.requeue(ctx(cs, "dedupe", retries=0), Selection(), fast(after_send=drop), now())
    assert dropped and not first.clean
    assert len(first.requeued) < 200
    second = ops.requeue(ctx(cs, "dedupe"), Selection(), fast(), now())
    assert second.clean
    found = observe(sb, "dedupe")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)


def test_oversize_messages_are_never_completed(cs: str, sb: EmulatorServer) -> None:
    # messages 0 and 30 (40 KB data bodies) and 20 and 50 (20 KB value bodies) exceed a 20,000-byte batch
    expected = dead_letter_all(sb, "orders", varied(60, big_every=10))
    result = dlq(cs, "requeue", "--yes", "--max-batch-bytes", "20000", "-o", "json")
    assert result.exit_code == ExitCode.PARTIAL
    summary = json.loads(result.stdout)
    assert summary["left"] == 4 and summary["leftReasons"] == {"oversize": 4} and summary["requeued"] == 56
    found = observe(sb, "orders")
    assert_conserved(expected, found)
    assert found.ids("dlq") == ["m-00000", "m-00020", "m-00030", "m-00050"]
    parked = dlq(cs, "requeue", "--yes", "--max-batch-bytes", "20000", "--park-queue", "parked", "-o", "json")
    assert parked.exit_code == 0 and json.loads(parked.stdout)["parked"] == 4
    found = observe(sb, "orders", "parked")
    assert_conserved(expected, found)
    assert found.ids("parked") == ["m-00000", "m-00020", "m-00030", "m-00050"] and not found.sdk["dlq"]
    assert all(r.text(b"x-dead-letter-reason") == s.reason for r in found.sdk["parked"]
               for s in expected if s.message_id == r.original_id)


def test_purge_refuses_without_yes_on_a_non_tty(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "orders", varied(5))
    result = dlq(cs, "purge")
    assert result.exit_code == ExitCode.REFUSED and "--yes" in result.stderr
    assert dlq(cs, "requeue").exit_code == ExitCode.REFUSED
    assert_conserved(expected, observe(sb, "orders"))  # all five still in the DLQ, untouched


def test_purge_with_export_then_import_restores(cs: str, sb: EmulatorServer, tmp_path: Path) -> None:
    expected = dead_letter_all(sb, "orders", varied(150))
    backup = tmp_path / "backup.jsonl"
    purged = dlq(cs, "purge", "--reason", "Poison.*", "--export", str(backup), "--yes", "-o", "json")
    assert purged.exit_code == 0 and json.loads(purged.stdout)["purged"] == 30
    records = [json.loads(line) for line in backup.read_text().splitlines()]
    assert len(records) == 30 and {r["deadLetterReason"] for r in records} == {"Poison.BadJson"}
    # the export file counts as a dead-letter place: every purged message is in it once, every field as sent
    assert_conserved(expected, observe(sb, "orders"), extra={"export": [from_export(r) for r in records]})
    restored = dlq(cs, "import", "--file", str(backup), "--to", "other", "--yes", "-o", "json")
    assert restored.exit_code == 0 and json.loads(restored.stdout)["sent"] == 30
    found = observe(sb, "orders", "other")
    assert_conserved(expected, found)
    assert found.ids("other") == sorted(r["messageId"] for r in records)


def test_export_is_lossless_and_import_refuses_a_corrupted_file(cs: str, sb: EmulatorServer, tmp_path: Path) \
        -> None:
    expected = dead_letter_all(sb, "orders", varied(9))
    out = tmp_path / "x.jsonl"
    assert dlq(cs, "export", "--file", str(out)).exit_code == 0
    lines = out.read_text().splitlines()
    found = observe(sb, "orders")
    assert_conserved(expected, found)
    assert_exact(expected, {"export": [from_export(json.loads(line)) for line in lines]},
                 default_ttl_ms=found.default_ttl_ms)  # each of the 9 once, every field as the SDK received it
    record = json.loads(lines[0])
    record["body"] = [{"$bytes": "AAAA"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[1], json.dumps(record)]) + "\n")
    result = dlq(cs, "import", "--file", str(bad), "--yes")
    assert result.exit_code == ExitCode.INVALID_INPUT and "line 2" in result.stderr
    assert_conserved(expected, observe(sb, "orders"))  # nothing imported: the 9 in the DLQ, the queue empty
    unwritable = dlq(cs, "purge", "--yes", "--export", str(tmp_path / "missing-dir" / "f.jsonl"))
    assert unwritable.exit_code == ExitCode.INVALID_INPUT
    assert_conserved(expected, observe(sb, "orders"))  # nothing purged without its backup


def test_dry_run_changes_nothing(cs: str, sb: EmulatorServer) -> None:
    expected = dead_letter_all(sb, "orders", varied(20))
    before = dlq(cs, "list", "-o", "json").stdout
    preview = dlq(cs, "requeue", "--dry-run", "--reason", "Transient.*", "-o", "json")
    rows = json.loads(preview.stdout)
    assert preview.exit_code == 0 and len(rows) == 8 and rows[0]["newMessageId"] == "m-00000:rq1"
    after = dlq(cs, "list", "-o", "json").stdout
    assert [{k: v for k, v in r.items() if k != "ageSeconds"} for r in json.loads(before)] == \
        [{k: v for k, v in r.items() if k != "ageSeconds"} for r in json.loads(after)]
    assert_conserved(expected, observe(sb, "orders"))  # all 20 still in the DLQ, every field as sent


def test_invalid_input_and_usage_exit_codes(cs: str) -> None:
    assert dlq(cs, "list", "--description", "(").exit_code == ExitCode.INVALID_INPUT
    assert dlq(cs, "list", "--min-age", "5 minutes").exit_code == ExitCode.INVALID_INPUT
    assert CliRunner().invoke(main, ["dlq", "list", "--connection-string", cs]).exit_code == ExitCode.USAGE
    assert CliRunner().invoke(main, ["dlq", "list", "--queue", "q"], env={
        "DIGEST_SERVICEBUS_NAMESPACE": "", "DIGEST_SERVICEBUS_CONNECTION_STRING": ""}).exit_code == ExitCode.USAGE


def test_unknown_queue_is_unavailable(cs: str) -> None:
    result = dlq(cs, "list", "--retries", "0", queue="nope")
    assert result.exit_code == ExitCode.UNAVAILABLE and "Service Bus" in result.stderr


def test_concurrent_lanes_conserve_and_settle_everything(cs: str, sb: EmulatorServer) -> None:
    # --parallel 3: three lock-scans compete for one DLQ, each completing its sent batches concurrently
    expected = dead_letter_all(sb, "dedupe", varied(240, big_every=9))
    outcome = ops.requeue(ctx(cs, "dedupe"), Selection(), fast(lanes=3), now())
    assert outcome.clean and len(outcome.requeued) == 240
    found = observe(sb, "dedupe")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)


def test_a_short_page_leaves_nothing_locked(cs: str, sb: EmulatorServer) -> None:
    # The DLQ receiver's link credit is a whole page (prefetch = page - 1): a receive cut to --limit leaves credit
    # over, the rest of the DLQ flows into the SDK's buffer under lock, and closing must release it. Otherwise those
    # messages stay locked for the whole lock duration (30 s here) and a second run finds none of them.
    expected = dead_letter_all(sb, "orders", varied(40))
    first = ops.requeue(ctx(cs, "orders"), Selection(limit=5), fast(), now())
    assert first.clean and len(first.requeued) == 5
    second = ops.requeue(ctx(cs, "orders"), Selection(), fast(), now())
    assert second.clean and len(second.requeued) == 35
    found = observe(sb, "orders")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)


def test_scan_handlers_skip_the_keep_alive_unless_paced() -> None:
    # Without keep_alive=None every handler's close waits for a keep-alive task sleeping in 1 s steps; a scan paced
    # by a rate limiter may idle long enough to need it.
    from digest_dlq import scan
    from digest_dlq.policy import RateLimiter

    plain = bus.ActOptions()
    assert scan.handler_options(plain) == {"keep_alive": None}
    receiver = scan.receiver_options(plain)
    assert receiver["keep_alive"] is None and receiver["prefetch_count"] == plain.receive_page - 1
    paced = bus.ActOptions(limiter=RateLimiter(5))
    assert "keep_alive" not in scan.handler_options(paced) and "keep_alive" not in scan.receiver_options(paced)


def test_forked_lanes_share_the_limit_and_the_progress(cs: str, sb: EmulatorServer) -> None:
    # --parallel 3 runs each lane in a forked process: the acted count (--limit) and the progress count live in
    # shared memory. Per-process counts would let every lane requeue up to the limit and report a third each.
    expected = dead_letter_all(sb, "orders", varied(150))
    counted: list[int] = []
    context = ops.Context(bus.Endpoint(connection_string=cs), "orders", {}, counted.append)
    limited = ops.requeue(context, Selection(limit=50), fast(lanes=3), now())
    assert limited.clean and len(limited.requeued) == 50
    assert sum(counted) >= 50  # every received page is counted, the held ones too
    counted.clear()
    rest = ops.requeue(context, Selection(), fast(lanes=3), now())
    assert rest.clean and len(rest.requeued) == 100 and sum(counted) == 100
    found = observe(sb, "orders")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)


def test_forked_lanes_never_act_on_what_a_sibling_released(cs: str, sb: EmulatorServer) -> None:
    # A batch whose send failed stays held by its lane until every lane has finished scanning (the barrier): released
    # earlier, a sibling could receive it again and requeue it, and the report would say both "failed" and "requeued".
    expected = dead_letter_all(sb, "orders", varied(200, big_every=7))
    sb.fail_next_sends(1)
    first = ops.requeue(ctx(cs, "orders", retries=0), Selection(), fast(lanes=2), now())
    assert first.failed and not set(first.failed) & set(first.requeued)
    assert len(first.requeued) + len(first.failed) == 200
    found = observe(sb, "orders")
    assert_conserved(expected, found)
    assert sorted(r.sequence_number for r in found.sdk["dlq"]) == sorted(first.failed)
    second = ops.requeue(ctx(cs, "orders"), Selection(), fast(lanes=2), now())
    assert second.clean and sorted(second.requeued) == sorted(first.failed)
    found = observe(sb, "orders")
    assert not found.sdk["dlq"]
    assert_conserved(expected, found)
