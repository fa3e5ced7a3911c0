"""Image references pinned by digest: the one rule the release path enforces everywhere."""

from __future__ import annotations

import re

_PINNED = re.compile(r"^(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")


class NotPinned(ValueError):
    """A reference without a sha256 digest (a tag only, or a malformed digest)."""


def split_pinned(ref: str) -> tuple[str, str]:
    """`NAME[:TAG]@sha256:<64 hex>` → (`NAME`, `sha256:<64 hex>`); the tag, if any, is dropped (the digest decides).
    Raises NotPinned for anything else."""
    match = _PINNED.match(ref.strip())
    if match is None:
        raise NotPinned(f"{ref!r} is not pinned by digest: give NAME@sha256:<64 lowercase hex>")
    name = match["name"]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a tag next to the digest: NAME:TAG@sha256:… (a port belongs to the registry host, before a /)
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name, match["digest"]
