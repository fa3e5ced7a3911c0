"""The sample pipelines in manifests/samples/, used as test fixtures."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
DIGEST = "sha256:" + "ab" * 32


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("digest_*.yaml"))


def load(name: str = "digest_v1alpha1_digestpipeline.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return data


def minimal(name: str = "demo", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A small valid pipeline; keyword arguments replace top-level spec fields."""
    body: dict[str, Any] = {
        "apiVersion": "digest.dev/v1alpha1",
        "kind": "DigestPipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": f"registry.example.com/team/digest-worker:1.0@{DIGEST}",
            "serviceBus": {
                "namespace": "contoso.servicebus.windows.net",
                "queue": "digests",
                "auth": {"workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"}},
            },
            "teams": {
                "appId": "11111111-2222-3333-4444-555555555555",
                "tenantId": "99999999-8888-7777-6666-555555555555",
            },
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def with_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `path` set to `value` (intermediate dicts created)."""
    result = copy.deepcopy(body)
    node = result
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result
