"""Parse a DigestPipeline object (a dict as stored in Kubernetes) into a typed, validated pipeline."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from digest_api import API_VERSION, KIND
from digest_api import spec as s
from digest_api.imageref import ImageRef, parse_image
from digest_api.spec import DNS_LABEL_PATTERN, DigestPipelineSpec

MAX_NAME_LENGTH = 63  # the name is used as a label value and in child names


class SpecError(ValueError):
    """An invalid pipeline; `problems` are `(field path, message)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline with the metadata the renderers need."""

    name: str
    namespace: str
    spec: DigestPipelineSpec
    uid: str | None = None
    generation: int | None = None

    @property
    def image(self) -> ImageRef:
        return parse_image(self.spec.image)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}"
        else:
            text += f"[{part!r}]"
    return text


_PATTERN_HINTS = {
    s.IMAGE_PATTERN: "must be an image reference such as registry.example.com/team/worker@sha256:<64 hex digits>",
    s.DURATION_PATTERN: "must be a duration with units in descending order, such as 30s, 5m, 1h30m or 7d",
    s.CRON_PATTERN: "must be a cron schedule with five fields, e.g. '*/5 * * * *'",
    s.UUID_PATTERN: "must be a GUID such as 00000000-0000-0000-0000-000000000000",
    s.FQDN_PATTERN: "must be a fully qualified host name such as contoso.servicebus.windows.net",
    s.DNS_LABEL_PATTERN: "must be a lowercase DNS label (a-z, 0-9, '-')",
    s.DNS_SUBDOMAIN_PATTERN: "must be a lowercase DNS subdomain name (a-z, 0-9, '-', '.')",
    s.QUEUE_PATTERN: "must be a Service Bus entity name (letters, digits, '.', '-', '_', '/')",
    s.ENV_NAME_PATTERN: "must be a valid environment variable name",
}


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        hint = _PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return f"{error['input']!r} {hint}"
    return str(error["msg"]).removeprefix("Value error, ")


def spec_problems(exc: ValidationError, prefix: str = "spec") -> list[tuple[str, str]]:
    """Turn a Pydantic error into `(path, message)` pairs with camelCase field paths."""
    return [(prefix + _path(tuple(error["loc"])), _message(error)) for error in exc.errors()]


def parse_pipeline(body: Mapping[str, Any]) -> Pipeline:
    """Validate a whole DigestPipeline object; raises SpecError listing every problem with its field path."""
    problems: list[tuple[str, str]] = []
    if body.get("apiVersion", API_VERSION) != API_VERSION:
        problems.append(("apiVersion", f"must be {API_VERSION}"))
    if body.get("kind", KIND) != KIND:
        problems.append(("kind", f"must be {KIND}"))
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name") or "")
    if not name:
        problems.append(("metadata.name", "is required"))
    elif len(name) > MAX_NAME_LENGTH or not re.fullmatch(DNS_LABEL_PATTERN, name):
        problems.append(("metadata.name", f"must be a DNS label of at most {MAX_NAME_LENGTH} characters"))
    spec_body = body.get("spec")
    spec: DigestPipelineSpec | None = None
    if not isinstance(spec_body, Mapping):
        problems.append(("spec", "is required"))
    else:
        try:
            spec = DigestPipelineSpec.model_validate(spec_body)
        except ValidationError as exc:
            problems.extend(spec_problems(exc))
    if problems or spec is None:
        raise SpecError(problems)
    return Pipeline(
        name=name,
        namespace=str(metadata.get("namespace") or "default"),
        spec=spec,
        uid=metadata.get("uid"),
        generation=metadata.get("generation"),
    )
