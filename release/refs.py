"""Image references pinned by digest: the one rule the release path enforces everywhere."""

from __future__ import annotations

from digest_api.imageref import parse_image


class NotPinned(ValueError):
    """A reference without a sha256 digest (a tag only, or a malformed digest)."""


def split_pinned(ref: str) -> tuple[str, str]:
    """`NAME[:TAG]@sha256:<64 hex>` → (`NAME`, `sha256:<64 hex>`); the tag, if any, is dropped (the digest decides).
    Raises NotPinned for anything else. Parsed by the same rule as the operator's `spec.image`."""
    try:
        image = parse_image(ref.strip())
    except ValueError:
        image = None
    if image is None or image.digest is None:
        raise NotPinned(f"{ref!r} is not pinned by digest: give NAME@sha256:<64 lowercase hex>")
    return image.name, image.digest
