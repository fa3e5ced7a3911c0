"""Emulator configuration: the official Service Bus emulator's Config.json (with its // comments), unchanged,
plus ad-hoc queues from the command line. Invalid input fails as a whole, naming every bad entry.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_NAMESPACE = "sbemulatorns"
DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"
ENTITY_NAME = r"^[A-Za-z0-9]$|^[A-Za-z0-9][\w\-./]*[A-Za-z0-9]$"
_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class ConfigError(ValueError):
    """Every problem of a configuration, each naming its entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid emulator configuration:\n  " + "\n  ".join(problems))


def parse_duration(text: str) -> datetime.timedelta:
    """ISO 8601 duration in days, hours, minutes and seconds (`PT1M`, `P1DT2H`, `PT0.5S`)."""
    match = _ISO_DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT30S, PT5M or P1D (years and months are "
                         f"not supported)")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    duration = datetime.timedelta(**parts)
    if duration <= datetime.timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class QueueProperties(_Model):
    """Queue properties as in Config.json; defaults are the Service Bus defaults the official emulator uses."""

    dead_lettering_on_message_expiration: bool = Field(False, alias="DeadLetteringOnMessageExpiration")
    default_message_time_to_live: datetime.timedelta = Field(
        datetime.timedelta(hours=1), alias="DefaultMessageTimeToLive")
    duplicate_detection_history_time_window: datetime.timedelta = Field(
        datetime.timedelta(seconds=20), alias="DuplicateDetectionHistoryTimeWindow")
    forward_dead_lettered_messages_to: str = Field("", alias="ForwardDeadLetteredMessagesTo")
    forward_to: str = Field("", alias="ForwardTo")
    lock_duration: datetime.timedelta = Field(datetime.timedelta(minutes=1), alias="LockDuration")
    max_delivery_count: int = Field(3, alias="MaxDeliveryCount", ge=1, le=2000)
    requires_duplicate_detection: bool = Field(False, alias="RequiresDuplicateDetection")
    requires_session: bool = Field(False, alias="RequiresSession")

    @field_validator(
        "default_message_time_to_live", "duplicate_detection_history_time_window", "lock_duration", mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("forward_to", "forward_dead_lettered_messages_to")
    @classmethod
    def _forwarding(cls, value: str) -> str:
        if value:
            raise ValueError("auto-forwarding is not supported by this emulator; leave it empty")
        return value


class QueueEntry(_Model):
    name: str = Field(alias="Name", pattern=ENTITY_NAME, max_length=260)
    properties: QueueProperties = Field(default_factory=QueueProperties, alias="Properties")


class TopicEntry(_Model):
    """Topics are accepted in the file (so an existing Config.json loads) but not served."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    name: str = Field(alias="Name", pattern=ENTITY_NAME, max_length=260)


class NamespaceEntry(_Model):
    name: str = Field(alias="Name", pattern=ENTITY_NAME)
    queues: list[QueueEntry] = Field(default_factory=list, alias="Queues")
    topics: list[TopicEntry] = Field(default_factory=list, alias="Topics")


class UserConfig(_Model):
    namespaces: list[NamespaceEntry] = Field(alias="Namespaces", min_length=1, max_length=1)
    logging: dict[str, Any] | None = Field(None, alias="Logging")


class ConfigFile(_Model):
    user_config: UserConfig = Field(alias="UserConfig")


@dataclass(frozen=True)
class EmulatorConfig:
    namespace: str = DEFAULT_NAMESPACE
    queues: Mapping[str, QueueProperties] = field(default_factory=dict)
    topics: tuple[str, ...] = ()
    keys: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_KEY_NAME: DEFAULT_KEY})
    insecure: bool = False
    """Accept any CBS token (no signature check)."""

    def queue(self, name: str) -> QueueProperties | None:
        """Entity names are case-insensitive in Service Bus."""
        return self._by_lower.get(name.lower())

    @property
    def _by_lower(self) -> dict[str, QueueProperties]:
        return {k.lower(): v for k, v in self.queues.items()}


def _location(loc: tuple[int | str, ...], raw: Any) -> str:
    """`UserConfig.Namespaces[0].Queues[1] (queue 'x').Properties.LockDuration` from a Pydantic location."""
    text, node = "", raw
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("Name"), str):
                text += f" ({node['Name']!r})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text


def parse_config_text(text: str, source: str = "Config.json") -> ConfigFile:
    try:
        raw = json5.loads(text)
    except ValueError as exc:
        raise ConfigError([f"{source}: not valid JSON (comments allowed): {exc}"]) from None
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([
            f"{source}: {_location(tuple(e['loc']), raw)}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        ]) from None


def parse_queue_flag(flag: str) -> tuple[str, QueueProperties]:
    """`NAME` or `NAME:Key=Value,Key=Value` with Config.json property names (`orders:MaxDeliveryCount=5`)."""
    name, _, options = flag.partition(":")
    raw: dict[str, Any] = {}
    for option in filter(None, options.split(",")):
        key, sep, value = option.partition("=")
        if not sep:
            raise ConfigError([f"--queue {flag}: {option!r} is not Key=Value"])
        raw[key.strip()] = _flag_value(value.strip())
    try:
        entry = QueueEntry.model_validate({"Name": name, "Properties": raw})
    except ValidationError as exc:
        raise ConfigError([f"--queue {flag}: {'.'.join(map(str, e['loc']))}: "
                           f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]) from None
    return entry.name, entry.properties


def _flag_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.isdigit() else text


def build_config(
    *, config_file: Path | None = None, queue_flags: Iterable[str] = (), keys: Mapping[str, str] | None = None,
    insecure: bool = False,
) -> EmulatorConfig:
    """Merge a Config.json and `--queue` flags; duplicate queue names (case-insensitive) are an error."""
    problems: list[str] = []
    namespace = DEFAULT_NAMESPACE
    queues: dict[str, QueueProperties] = {}
    topics: tuple[str, ...] = ()
    if config_file is not None:
        try:
            parsed = parse_config_text(config_file.read_text(), str(config_file))
        except OSError as exc:
            raise ConfigError([f"{config_file}: {exc.strerror}"]) from None
        ns = parsed.user_config.namespaces[0]
        namespace = ns.name
        for entry in ns.queues:
            if entry.name.lower() in {q.lower() for q in queues}:
                problems.append(f"{config_file}: queue {entry.name!r} is defined twice")
            queues[entry.name] = entry.properties
        topics = tuple(t.name for t in ns.topics)
    for flag in queue_flags:
        try:
            name, props = parse_queue_flag(flag)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if name.lower() in {q.lower() for q in queues}:
            problems.append(f"--queue {flag}: queue {name!r} is already defined")
        queues[name] = props
    if problems:
        raise ConfigError(problems)
    return EmulatorConfig(
        namespace=namespace, queues=queues, topics=topics,
        keys=dict(keys) if keys else {DEFAULT_KEY_NAME: DEFAULT_KEY}, insecure=insecure,
    )
