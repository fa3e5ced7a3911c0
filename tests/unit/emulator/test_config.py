"""Emulator configuration: the official Config.json loads unchanged; bad entries are named; --queue flags."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from digest_sbemulator.config import (
    DEFAULT_KEY,
    DEFAULT_KEY_NAME,
    ConfigError,
    build_config,
    parse_config_text,
    parse_duration,
    parse_queue_flag,
)
from tests.support.samples import ROOT

OFFICIAL = ROOT / "tests" / "reference" / "servicebus-emulator" / "Config.json"


def test_the_official_config_json_loads_unchanged() -> None:
    assert "//" in OFFICIAL.read_text()  # it has comments
    config = build_config(config_file=OFFICIAL)
    assert config.namespace == "sbemulatorns"
    props = config.queue("QUEUE.1")  # names are case-insensitive
    assert props is not None
    assert props.max_delivery_count == 3
    assert props.lock_duration == datetime.timedelta(minutes=1)
    assert props.default_message_time_to_live == datetime.timedelta(hours=1)
    assert props.duplicate_detection_history_time_window == datetime.timedelta(seconds=20)
    assert config.topics == ("topic.1",)
    assert config.keys == {DEFAULT_KEY_NAME: DEFAULT_KEY}


def _config(queue_properties: str, name: str = "q") -> str:
    return ('{"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [{"Name": "ok"}, '
            f'{{"Name": "{name}", "Properties": {{{queue_properties}}}}}]}}]}}}}')


@pytest.mark.parametrize(("properties", "fragment"), [
    ('"MaxDeliveryCount": 0', "Queues[1] ('q').Properties.MaxDeliveryCount: Input should be greater than or equal"),
    ('"LockDuration": "1 minute"', "Queues[1] ('q').Properties.LockDuration: '1 minute' is not an ISO 8601"),
    ('"LockDuration": "PT0S"', "must be longer than zero"),
    ('"MaxDeliveryCunt": 3', "Queues[1] ('q').Properties.MaxDeliveryCunt: Extra inputs are not permitted"),
    ('"ForwardTo": "other"', "auto-forwarding is not supported"),
])
def test_invalid_entries_are_named(properties: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(_config(properties), "c.json")
    assert any(fragment in problem for problem in info.value.problems), info.value.problems


def test_bad_json_and_bad_names() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config_text("{", "c.json")
    with pytest.raises(ConfigError, match=r"Queues\[1\].*Name"):
        parse_config_text(_config("", name="-bad-"), "c.json")


def test_duplicate_queues_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(_config("", name="OK"))
    with pytest.raises(ConfigError, match="defined twice"):
        build_config(config_file=path)
    path.write_text(_config(""))
    with pytest.raises(ConfigError, match="already defined"):
        build_config(config_file=path, queue_flags=["Q"])


def test_queue_flags() -> None:
    name, props = parse_queue_flag("orders:MaxDeliveryCount=5,LockDuration=PT2S,RequiresDuplicateDetection=true")
    assert name == "orders"
    assert (props.max_delivery_count, props.lock_duration, props.requires_duplicate_detection) == (
        5, datetime.timedelta(seconds=2), True)
    with pytest.raises(ConfigError, match=r"--queue q:Bogus=1: Properties\.Bogus"):
        parse_queue_flag("q:Bogus=1")
    config = build_config(queue_flags=["a", "b:MaxDeliveryCount=2"], keys={"k": "v"}, insecure=True)
    assert set(config.queues) == {"a", "b"}
    assert config.keys == {"k": "v"}
    assert config.insecure


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        build_config(config_file=tmp_path / "absent.json")


@pytest.mark.parametrize(("text", "seconds"), [("PT1M", 60), ("P1DT2H", 93600), ("PT0.5S", 0.5), ("PT20S", 20)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
