"""Small helpers of the cluster tier: pod listings, HTTP from the host to pod IPs, pipelines."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from digest_cluster.cluster import Cluster
from digest_cluster.install import get


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = get(cluster, "pods", "-n", namespace, "-l", selector)
    return list((found or {}).get("items", []))


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def metric(text: str, name: str) -> float:
    """Sum of every sample of `name` (all label sets) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pipeline(name: str, namespace: str, image: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "digest.dev/v1alpha1", "kind": "DigestPipeline",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"image": image, **spec}}


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    found = get(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return list((found or {}).get("items", []))


def as_json(obj: Any) -> str:
    return json.dumps(obj)[:3000]
