"""Pure core: the faithful copy (allow-list, id strategy), byte packing, selection, export records, reports."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import Any

import pytest

from digest_api.durations import parse_duration
from digest_dlq.batching import ENVELOPE_RESERVE, batch_cost, pack
from digest_dlq.copy import MAX_ID_LENGTH, build_copy, choose_id, requeue_id
from digest_dlq.message import DlqMessage, decode_value, encode_value, normalise_properties
from digest_dlq.records import RecordError, from_record, to_record
from digest_dlq.report import Outcome, compact, monitor_report, stats
from digest_dlq.select import Selection

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def dead(seq: int = 7, **overrides: Any) -> DlqMessage:
    fields: dict[str, Any] = {
        "sequence_number": seq, "message_id": "orig-1", "enqueued_time": NOW - datetime.timedelta(hours=1),
        "delivery_count": 2, "body_type": "data", "body": [b"part1", b"part2"],
        "properties": {"message_id": "orig-1", "subject": "digest", "group_id": "session-9",
                       "correlation_id": "corr", "content_type": "application/json", "creation_time": 1,
                       "absolute_expiry_time": 2},
        "application_properties": normalise_properties({
            b"DeadLetterReason": b"Transient.Exhausted.Http", b"DeadLetterErrorDescription": b"503\nat line",
            b"tenant": b"contoso", b"n": 5}),
        "annotations": {"x-opt-sequence-number": seq, "x-opt-enqueued-time": 1, "x-opt-locked-until": 2,
                        "x-opt-deadletter-source": "orders", "x-opt-partition-key": "pk"},
        "header": {"time_to_live": 600_000, "durable": True},
    }
    fields.update(overrides)
    return DlqMessage(**fields)


def test_copy_keeps_the_allow_list_and_strips_dead_letter_fields() -> None:
    copy = build_copy(dead(), id_mode="preserve", now=NOW)
    assert copy.body_type == "data" and copy.body == [b"part1", b"part2"]
    assert copy.properties == {"message_id": "orig-1", "subject": "digest", "group_id": "session-9",
                               "correlation_id": "corr", "content_type": "application/json"}
    app = copy.application_properties
    assert "DeadLetterReason" not in app and "DeadLetterErrorDescription" not in app
    assert app["tenant"] == "contoso" and app["n"] == 5  # bytes keys and values normalised to str
    assert app["x-requeue-count"] == 1 and app["x-original-message-id"] == "orig-1"
    assert app["x-original-sequence-number"] == 7 and app["x-requeued-at"].startswith("2026-11-28T12:00")
    assert copy.annotations == {"x-opt-partition-key": "pk"}  # no broker-owned annotation travels
    assert copy.time_to_live == 600 and copy.scheduled_enqueue_time is None


def test_second_requeue_counts_on_and_keeps_the_first_original_id() -> None:
    first = build_copy(dead(), id_mode="regenerate", now=NOW)
    again = dead(seq=99, message_id=first.message_id, properties={**first.properties},
                 application_properties={**first.application_properties, "DeadLetterReason": "X"})
    second = build_copy(again, id_mode="regenerate", now=NOW)
    assert first.message_id == "orig-1:rq1" and second.message_id == "orig-1:rq2"
    assert second.application_properties["x-original-message-id"] == "orig-1"
    assert second.application_properties["x-requeue-count"] == 2


@pytest.mark.parametrize(
    ("mode", "dedupes", "expected"),
    [("preserve", True, "orig-1"), ("regenerate", False, "orig-1:rq1"), ("auto", True, "orig-1:rq1"),
     ("auto", False, "orig-1")],
)
def test_id_strategy(mode: Any, dedupes: bool, expected: str) -> None:
    assert choose_id(dead(), mode, dedupes, 1) == expected


def test_regenerated_ids_are_deterministic_and_fit_128_chars() -> None:
    long_id = "a" * 128
    assert requeue_id(long_id, 12) == requeue_id(long_id, 12)
    assert len(requeue_id(long_id, 12)) <= MAX_ID_LENGTH and requeue_id(long_id, 12).endswith(":rq12")
    assert requeue_id("a" * 127 + "b", 1) != requeue_id("a" * 127 + "c", 1)
    no_id = dead(message_id=None, properties={})
    assert choose_id(no_id, "regenerate", True, 1) == "seq-7:rq1"


def test_park_copy_keeps_count_and_the_reason_under_other_names() -> None:
    copy = build_copy(dead(application_properties={"DeadLetterReason": "Poison", "x-requeue-count": "2"}),
                      now=NOW, count_requeue=False)
    assert copy.message_id == "orig-1"
    assert copy.application_properties["x-requeue-count"] == 2
    assert copy.application_properties["x-dead-letter-reason"] == "Poison"
    assert "DeadLetterReason" not in copy.application_properties
    assert "x-requeued-at" not in copy.application_properties


def test_value_and_sequence_bodies_send_strings_back_as_strings() -> None:
    value = build_copy(dead(body_type="value", body={b"k": [b"v", 1]}), now=NOW)
    assert value.body == {"k": ["v", 1]}
    sequence = build_copy(dead(body_type="sequence", body=[[b"a", 2]]), now=NOW)
    assert sequence.body == [["a", 2]]


def test_pack_by_bytes_not_count() -> None:
    sizes = {"a": 100, "b": 100, "c": 900, "d": 50, "e": 5000}
    limit = ENVELOPE_RESERVE + batch_cost(100) * 2 + 10
    packing = pack(list(sizes), sizes.__getitem__, limit)
    assert packing.batches == [["a", "b"], ["d"]] and packing.oversize == ["c", "e"]
    big = pack(list(sizes), sizes.__getitem__, 2000)
    assert big.batches == [["a", "b", "c", "d"]] and big.oversize == ["e"]
    assert pack([], len, 100).batches == []


def test_pack_starts_a_new_batch_when_the_session_changes() -> None:
    items = [("s1", 1), ("s1", 2), ("s2", 3), ("s1", 4)]
    packing = pack(items, lambda _: 10, 10_000, key=lambda item: item[0])
    assert packing.batches == [[("s1", 1), ("s1", 2)], [("s2", 3)], [("s1", 4)]]


def test_selection_filters() -> None:
    message = dead()
    assert Selection().matches(message, NOW)
    assert Selection(reason="Transient.*").matches(message, NOW)
    assert not Selection(reason="Poison*").matches(message, NOW)
    assert Selection(description=re.compile("^503")).matches(message, NOW)
    assert not Selection(description=re.compile("timeout")).matches(message, NOW)
    assert Selection(min_age=datetime.timedelta(minutes=30)).matches(message, NOW)
    assert not Selection(max_age=datetime.timedelta(minutes=30)).matches(message, NOW)
    assert Selection(subject="digest", message_ids=frozenset({"orig-1"})).matches(message, NOW)
    assert not Selection(from_sequence=8).matches(message, NOW)
    assert not Selection(to_sequence=6).matches(message, NOW)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800),
                                                ("1w", 604800), ("250ms", 0.25), ("1y", 31536000)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "m5", "5 minutes", "-1m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_typed_json_round_trip() -> None:
    value = {b"k": [b"\x00\xff", 1, 2.5, None, True, uuid.UUID(int=5), NOW, {"$tricky": "x"}], "s": "t"}
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value


@pytest.mark.parametrize("body_type", ["data", "sequence", "value"])
def test_export_record_round_trip(body_type: str) -> None:
    bodies: dict[str, Any] = {"data": [b"\x00\x01", b"z"], "sequence": [[1, b"a"]], "value": {b"k": 1}}
    message = dead(body_type=body_type, body=bodies[body_type])
    line = json.dumps(to_record(message))
    back = from_record(json.loads(line))
    assert back.body == message.body and back.body_hash() == message.body_hash()
    assert back.application_properties == message.application_properties
    assert back.properties == message.properties and back.annotations == message.annotations
    assert back.reason == "Transient.Exhausted.Http"


def test_corrupted_record_is_refused_with_its_line() -> None:
    record = to_record(dead())
    record["body"] = [{"$bytes": "AAAA"}]
    with pytest.raises(RecordError, match="line 3: body does not match"):
        from_record(record, 3)
    with pytest.raises(RecordError, match="line 4: malformed"):
        from_record({"v": 1}, 4)


def test_stats_groups_by_reason_and_first_description_line() -> None:
    rows = stats([dead(1), dead(2, enqueued_time=NOW - datetime.timedelta(minutes=1)),
                  dead(3, application_properties={"DeadLetterReason": "Poison"})], NOW)
    assert rows[0]["reason"] == "Transient.Exhausted.Http" and rows[0]["description"] == "503"
    assert rows[0]["count"] == 2 and rows[0]["oldestAgeSeconds"] == 3600 and rows[0]["newestAgeSeconds"] == 60
    assert rows[1]["reason"] == "Poison"


def test_report_fits_the_termination_message() -> None:
    outcome = Outcome(requeued=[1], errors=["e" * 300] * 10)
    reasons = {"Skip": {f"Reason.{i}." + "x" * 60: i for i in range(200)}, "Requeue": {"A": 1}}
    report = monitor_report(pipeline="ns/p", queue="q", now=NOW, mode="Active", remaining=[dead()],
                            decisions={"Skip": 200, "Requeue": 1}, reasons=reasons, outcome=outcome,
                            circuit={"state": "Closed", "returned": 0, "threshold": 10})
    text = compact(report)
    assert len(text.encode()) <= 4096
    parsed = json.loads(text)
    assert parsed["count"] == 1 and parsed["oldestAgeSeconds"] == 3600 and parsed["requeued"] == 1
    assert parsed["truncated"] is True and parsed["circuit"]["state"] == "Closed"
    small = json.loads(compact({**report, "reasons": {}, "errors": []}))
    assert "truncated" not in small
