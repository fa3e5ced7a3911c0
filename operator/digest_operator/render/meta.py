"""Names, labels and ownerReferences of the objects rendered for a pipeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from digest_api import API_VERSION, KIND

PART_OF = "digest-pipelines"
MANAGED_BY = "digest-operator"
PIPELINE_LABEL = "digest.dev/pipeline"

# Length limits: a ScaledObject name is used in KEDA's HPA name `keda-hpa-<name>` (<= 63), a CronJob name gets an
# 11-character suffix for its Jobs (<= 63), other names are used as label values (<= 63).
SCALED_OBJECT_MAX = 54
CRONJOB_MAX = 52
LABEL_VALUE_MAX = 63


def child_name(base: str, suffix: str = "", limit: int = LABEL_VALUE_MAX) -> str:
    """`base + suffix`, shortened deterministically with a hash of `base` when it would exceed `limit`."""
    name = base + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


@dataclass(frozen=True)
class Owner:
    """The pipeline that owns the rendered objects."""

    name: str
    namespace: str
    uid: str | None = None

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    """Immutable labels that select a component's pods."""
    return {
        "app.kubernetes.io/name": "digest-worker",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
    }


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        **selector_labels(owner, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        PIPELINE_LABEL: owner.name,
    }


def metadata(
    owner: Owner, name: str, component: str, *, annotations: dict[str, str] | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**(extra_labels or {}), **labels(owner, component)},
    }
    if annotations:
        meta["annotations"] = annotations
    if owner.uid is not None:
        meta["ownerReferences"] = [owner.reference()]
    return meta


_KEEP_EMPTY = frozenset({"emptyDir"})  # `emptyDir: {}` means something


def prune_empty(value: Any) -> Any:
    """Drop empty strings, maps and lists (and None) the way the API server's `omitempty` does, so a rendered
    object compares equal to what the server stores."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            pruned = item if key in _KEEP_EMPTY else prune_empty(item)
            if pruned is None or (key not in _KEEP_EMPTY and pruned in ("", {}, [])):
                continue
            result[key] = pruned
        return result
    if isinstance(value, list):
        return [prune_empty(item) for item in value]
    return value


APPLIED_HASH = "digest.dev/applied-hash"


def stamp_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Record a hash of the rendered object in an annotation. A live child whose hash differs was rendered from
    another spec (or another operator version): it is updated, and server-side apply removes the fields the
    operator no longer applies. Same hash but different owned fields means someone edited it: drift."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
    stamped = {**obj, "metadata": {**obj["metadata"]}}
    stamped["metadata"]["annotations"] = {**obj["metadata"].get("annotations", {}), APPLIED_HASH: digest}
    return stamped
