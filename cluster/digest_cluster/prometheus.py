"""Prometheus (Debian's `prometheus`) for the local cluster, configured from the cluster's PodMonitors and
PrometheusRules the way the Prometheus Operator would, without running the Prometheus Operator.

Pure: `scrape_configs` (PodMonitor → `kubernetes_sd_configs` role `pod` with the operator's relabelling: keep pods
matching the selector and the named container port, drop finished pods, set `namespace`/`pod`/`container`
labels), `rule_file` (the PrometheusRules' groups), `configuration`. I/O: `start`, `Prometheus.alerts`/`query`/
`stop`. Prometheus runs on the host and reaches pod IPs through the node's bridge; it discovers pods with the
cluster's admin client certificate.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digest_cluster import processes
from digest_cluster.layout import API_PORT, NODE_IP, Layout

BINARY = "/usr/bin/prometheus"
PORT = 9090
NAME = "prometheus"


def _label(name: str) -> str:
    """A Kubernetes label name as a Prometheus meta label suffix (`app.kubernetes.io/name` →
    `app_kubernetes_io_name`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_configs(monitors: Sequence[dict[str, Any]], *, api_server: str, tls: dict[str, str],
                   interval: str | None = None) -> list[dict[str, Any]]:
    """One scrape job per PodMonitor endpoint; `interval` overrides the endpoints' own (short test runs)."""
    jobs: list[dict[str, Any]] = []
    for monitor in monitors:
        meta, spec = monitor["metadata"], monitor.get("spec") or {}
        names = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
        keep = [{"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{_label(key)}",
                                                      f"__meta_kubernetes_pod_labelpresent_{_label(key)}"],
                 "regex": f"{re.escape(str(value))};true"}
                for key, value in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())]
        for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
            job = f"podMonitor/{meta['namespace']}/{meta['name']}/{index}"
            relabel = [
                *keep,
                {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
                {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                 "regex": re.escape(str(endpoint["port"]))},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            ]
            jobs.append({
                "job_name": job,
                "scrape_interval": interval or endpoint.get("interval") or "30s",
                "metrics_path": endpoint.get("path") or "/metrics",
                "kubernetes_sd_configs": [{"role": "pod", "api_server": api_server, "tls_config": tls,
                                           "namespaces": {"names": list(names)}}],
                "relabel_configs": relabel,
            })
    return jobs


def rule_file(rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every group of the PrometheusRules (their `spec`) in one rule file."""
    return {"groups": [group for rule in rules for group in (rule.get("spec") or {}).get("groups") or []]}


def configuration(monitors: Sequence[dict[str, Any]], rules_path: Path, *, api_server: str, tls: dict[str, str],
                  scrape_interval: str | None, evaluation_interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval or "30s", "evaluation_interval": evaluation_interval},
        "rule_files": [str(rules_path)],
        "scrape_configs": scrape_configs(monitors, api_server=api_server, tls=tls, interval=scrape_interval),
    }


@dataclass(frozen=True)
class Prometheus:
    url: str
    layout: Layout

    def _get(self, path: str, **query: str) -> Any:
        address = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {answer}")
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (`/api/v1/alerts`)."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", query=expr)["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def stop(self) -> None:
        stop(self.layout)


def stop(layout: Layout) -> None:
    for daemon in processes.recorded(layout.pids):
        if daemon.name == NAME:
            processes.stop(daemon, layout.pids)


def start(layout: Layout, monitors: Sequence[dict[str, Any]], rules: Sequence[dict[str, Any]], *,
          scrape_interval: str | None = None, evaluation_interval: str = "5s", port: int = PORT) -> Prometheus:
    """(Re)start Prometheus on 127.0.0.1:`port` for these PodMonitors and PrometheusRules; ready when it returns."""
    stop(layout)
    home = layout.root / "services" / NAME
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    rules_path = home / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rule_file(rules), sort_keys=False))
    tls = {"ca_file": str(layout.pki / "ca.crt"), "cert_file": str(layout.pki / "admin.crt"),
           "key_file": str(layout.pki / "admin.key")}
    config = home / "prometheus.yaml"
    config.write_text(yaml.safe_dump(configuration(
        monitors, rules_path, api_server=f"https://{NODE_IP}:{API_PORT}", tls=tls, scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval), sort_keys=False))
    url = f"http://127.0.0.1:{port}"
    daemon = processes.spawn(NAME, [BINARY, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                             layout.logs, layout.pids)
    processes.wait_until(daemon, processes.http_ok(f"{url}/-/ready"), "/-/ready", 60)
    return Prometheus(url, layout)
