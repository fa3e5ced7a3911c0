"""Body normalisation across AMQP body types and the request model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from digest_worker.body import DATA, SEQUENCE, VALUE, normalise
from digest_worker.request import MAX_BODY_BYTES, DigestRequest, InvalidMessage, parse_request

GOOD = {"conversation_id": "19:abc@thread.v2", "date_range_days": 7, "max_items": 5}


def parse(body_type: str, body: Any, content_type: str | None = "application/json",
          message_id: str | None = "m-1") -> DigestRequest:
    return parse_request(normalise(body_type, body, content_type), message_id)


def test_one_data_section() -> None:
    req = parse(DATA, iter([json.dumps(GOOD).encode()]))
    assert req == DigestRequest(request_id="m-1", conversation_id="19:abc@thread.v2", date_range_days=7, max_items=5)


def test_several_data_sections_are_joined() -> None:
    raw = json.dumps({**GOOD, "request_id": "r-9", "title": "Weekly"}).encode()
    req = parse(DATA, (raw[i:i + 5] for i in range(0, len(raw), 5)))
    assert (req.request_id, req.title) == ("r-9", "Weekly")


@pytest.mark.parametrize("body", [json.dumps(GOOD), json.dumps(GOOD).encode(),
                                  {k.encode(): v for k, v in GOOD.items()}, GOOD])
def test_value_bodies_str_bytes_and_maps(body: Any) -> None:
    assert parse(VALUE, body).conversation_id == "19:abc@thread.v2"


def test_value_map_with_bytes_strings_is_decoded() -> None:
    req = parse(VALUE, {b"conversation_id": b"c-1", b"owner": b"ana"})
    assert (req.conversation_id, req.owner) == ("c-1", "ana")


def test_defaults_and_unknown_fields_ignored() -> None:
    req = parse(DATA, [json.dumps({"conversation_id": "c", "extra": {"x": 1}}).encode()])
    assert (req.date_range_days, req.max_items, req.owner, req.audience, req.title) == (7, 10, None, None, None)


def test_request_id_in_body_wins_over_message_id() -> None:
    assert parse(DATA, [json.dumps({**GOOD, "request_id": "r"}).encode()], message_id="m").request_id == "r"


@pytest.mark.parametrize(("body_type", "body", "field", "fragment"), [
    (DATA, [b""], "body", "empty"),
    (DATA, [], "body", "empty"),
    (DATA, [b"not json"], "body", "not JSON"),
    (DATA, [b"\xff\xfe{}"], "body", "not UTF-8"),
    (DATA, [b"[1, 2]"], "body", "JSON object is required"),
    (VALUE, b"x" * (MAX_BODY_BYTES + 1), "body", "limit"),
    (DATA, [b"x" * 1024] * 1024, "body", "more than"),
    (VALUE, 42, "body", "value body of type int"),
    (VALUE, [1, 2], "body", "value body of type list"),
    (VALUE, {b"conversation_id": b"\xff"}, "body", "not UTF-8"),
    (SEQUENCE, [[1, 2]], "body", "sequence bodies are not supported"),
    ("weird", b"", "body", "unknown AMQP body type"),
])
def test_poison_bodies_name_the_body(body_type: str, body: Any, field: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse(body_type, body)
    assert info.value.field == field
    assert fragment in info.value.detail


@pytest.mark.parametrize(("patch", "field", "fragment"), [
    ({"date_range_days": "7"}, "date_range_days", "valid integer"),
    ({"date_range_days": 0}, "date_range_days", "greater than or equal to 1"),
    ({"date_range_days": 91}, "date_range_days", "less than or equal to 90"),
    ({"max_items": 51}, "max_items", "less than or equal to 50"),
    ({"max_items": True}, "max_items", "valid integer"),
    ({"max_items": 2.5}, "max_items", "valid integer"),
    ({"conversation_id": 5}, "conversation_id", "valid string"),
    ({"conversation_id": ""}, "conversation_id", "at least 1"),
    ({"owner": ["a"]}, "owner", "valid string"),
    ({"title": "t" * 201}, "title", "at most 200"),
])
def test_wrong_types_and_ranges_name_the_field(patch: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse(DATA, [json.dumps({**GOOD, **patch}).encode()])
    assert info.value.field == field
    assert fragment in info.value.detail


def test_missing_conversation_and_no_request_id() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse(DATA, [b"{}"], message_id=None)
    assert info.value.field == "request_id"
    assert "conversation_id: Field required" in info.value.detail


def test_non_json_content_type_is_invalid() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse(DATA, [json.dumps(GOOD).encode()], content_type="text/plain")
    assert info.value.field == "content_type"
    assert parse(DATA, [json.dumps(GOOD).encode()], content_type="application/json; charset=utf-8").max_items == 5
    assert parse(DATA, [json.dumps(GOOD).encode()], content_type=None).max_items == 5
