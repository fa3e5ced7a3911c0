"""Pure comparisons: does a live object already hold everything we would apply? And JSON merge patches."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY_KEYS = frozenset({"requests", "limits", "sizeLimit"})
_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "": Decimal(1), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
# Metadata fields the operator owns; everything else in live metadata belongs to the server or to others.
_OWNED_METADATA = ("labels", "annotations", "ownerReferences")


def quantity_value(text: object) -> Decimal | None:
    """The numeric value of a Kubernetes quantity, or None when `text` is not one."""
    match = _QUANTITY.match(str(text))
    if match is None:
        return None
    try:
        return Decimal(match[1]) * _SUFFIXES[match[2] or ""]
    except InvalidOperation:
        return None


def _leaf_equal(desired: Any, live: Any, quantities: bool) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if quantities:
        a, b = quantity_value(desired), quantity_value(live)
        return a is not None and a == b
    return False


def contains(desired: Any, live: Any, *, quantities: bool = False) -> bool:
    """True when every field of `desired` is present with an equal value in `live`.

    Dicts may have extra keys in `live` (server defaults, other managers); lists must have the same length and
    match element by element; quantities compare by value (the server normalises `1000m` to `1`).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            key in live and contains(value, live[key], quantities=quantities or key in _QUANTITY_KEYS)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(contains(d, v, quantities=quantities) for d, v in zip(desired, live, strict=True))
    return _leaf_equal(desired, live, quantities)


def in_sync(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """Would applying `desired` change `live`? (False means an apply is needed.)"""
    desired_meta = {k: v for k, v in desired.get("metadata", {}).items() if k in _OWNED_METADATA}
    if not contains(desired_meta, live.get("metadata", {})):
        return False
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    return contains(body, live)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """An RFC 7386 JSON merge patch turning `old` into `new` (empty when they are equal)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch
