"""The status write of a reconcile survives a conflict that left the status alone (e.g. Kopf's own annotations)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from digest_operator.handlers import write_status
from digest_operator.k8s import ApiError


class Pipelines:
    """The stored pipeline; a write guarded by a stale resourceVersion fails with 409 like on the API server."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[tuple[dict[str, Any], str | None]] = []

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def patch_status(
        self, api_version: str, plural: str, namespace: str | None, name: str, patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        self.patches.append((patch, resource_version))
        if resource_version != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.obj["status"] = {**self.obj.get("status", {}), **patch}
        return copy.deepcopy(self.obj)


def _pipeline(version: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": "demo", "uid": "u1", "resourceVersion": version},
            "status": status}


async def test_a_conflict_from_a_metadata_change_is_written_again() -> None:
    raw = _pipeline("1", {"rollout": {"revision": 1}})
    stored = Pipelines(_pipeline("2", {"rollout": {"revision": 1}}))  # Kopf patched an annotation meanwhile
    await write_status(stored, raw, {"rollout": {"revision": 2}})
    assert stored.patches == [({"rollout": {"revision": 2}}, "1"), ({"rollout": {"revision": 2}}, "2")]
    assert stored.obj["status"]["rollout"] == {"revision": 2}


async def test_a_conflict_from_another_status_write_is_raised() -> None:
    raw = _pipeline("1", {"rollout": {"revision": 1}})
    stored = Pipelines(_pipeline("2", {"rollout": {"revision": 5}}))
    with pytest.raises(ApiError) as info:
        await write_status(stored, raw, {"rollout": {"revision": 2}})
    assert info.value.status == 409 and len(stored.patches) == 1
    assert stored.obj["status"]["rollout"] == {"revision": 5}


async def test_a_replaced_pipeline_is_not_written() -> None:
    raw = _pipeline("1", {})
    stored = Pipelines({**_pipeline("2", {}), "metadata": {**_pipeline("2", {})["metadata"], "uid": "u2"}})
    with pytest.raises(ApiError):
        await write_status(stored, raw, {"observedGeneration": 1})
    assert len(stored.patches) == 1
