"""Container image references (the distribution/reference grammar, restricted to sha256 digests)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"

# ECMAScript/RE2-compatible: also used as the CRD's openAPI `pattern`.
IMAGE_PATTERN = rf"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
_PARSE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference; `pinned` when it names a digest."""

    name: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def short(self) -> str:
        """`<last path component>@<first 12 hex digits>` (or `:<tag>`), for printer columns and Events."""
        base = self.name.rsplit("/", 1)[-1]
        if self.digest is None:
            return f"{base}:{self.tag or 'latest'}"
        return f"{base}@{self.digest.removeprefix('sha256:')[:12]}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image(reference: str) -> ImageRef:
    """Parse `reference`; raises ValueError when it is not a valid image reference."""
    match = _PARSE.fullmatch(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not a valid image reference")
    return ImageRef(name=match["name"], tag=match["tag"], digest=match["digest"])
