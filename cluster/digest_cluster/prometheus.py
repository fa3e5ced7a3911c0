"""Prometheus (Debian's `prometheus`) for the local cluster, configured from the cluster's PodMonitors and
PrometheusRules the way the Prometheus Operator would, without running the Prometheus Operator.

Debian builds Prometheus without Kubernetes service discovery (`kubernetes_sd_configs` is not a known field), so
the harness discovers the pods itself: a small host process (`python -m digest_cluster.prometheus discover`) lists
the pods every few seconds and writes one `file_sd` file per PodMonitor endpoint, selecting them as the Prometheus
Operator's relabelling does (the monitor's namespaces, its `matchLabels`, a container port with the endpoint's
name, finished pods dropped) and labelling them `namespace`, `pod`, `container`, `job`.

Pure: `targets`, `scrape_configs`, `rule_file`, `configuration`. I/O: `start`, `discover`, `Prometheus`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from digest_cluster import processes
from digest_cluster.layout import Layout

BINARY = "/usr/bin/prometheus"
PORT = 9090
NAME = "prometheus"
DISCOVERY = "prometheus-discovery"


def _endpoints(monitor: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    meta = monitor["metadata"]
    return [(f"podMonitor/{meta['namespace']}/{meta['name']}/{index}", endpoint)
            for index, endpoint in enumerate((monitor.get("spec") or {}).get("podMetricsEndpoints") or [])]


def _file(job: str) -> str:
    return job.replace("/", "_") + ".json"


def targets(monitor: dict[str, Any], endpoint: dict[str, Any], pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `file_sd` entries of one PodMonitor endpoint among `pods` (pure)."""
    meta, spec = monitor["metadata"], monitor.get("spec") or {}
    namespaces = set((spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]])
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    found: list[dict[str, Any]] = []
    for pod in pods:
        pod_meta, status = pod["metadata"], pod.get("status") or {}
        labels = pod_meta.get("labels") or {}
        if pod_meta.get("namespace") not in namespaces or any(labels.get(k) != v for k, v in wanted.items()):
            continue
        if status.get("phase") in ("Failed", "Succeeded") or not status.get("podIP"):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == endpoint["port"]:
                    found.append({"targets": [f"{status['podIP']}:{port['containerPort']}"], "labels": {
                        "namespace": pod_meta["namespace"], "pod": pod_meta["name"], "container": container["name"],
                        "job": f"{meta['namespace']}/{meta['name']}"}})
    return found


def scrape_configs(monitors: Sequence[dict[str, Any]], targets_dir: Path, *,
                   interval: str | None = None) -> list[dict[str, Any]]:
    """One scrape job per PodMonitor endpoint, its targets in `targets_dir`; `interval` overrides the endpoints'
    own (short test runs)."""
    return [{
        "job_name": job,
        "scrape_interval": interval or endpoint.get("interval") or "30s",
        "metrics_path": endpoint.get("path") or "/metrics",
        "honor_labels": False,
        "file_sd_configs": [{"files": [str(targets_dir / _file(job))], "refresh_interval": "5s"}],
    } for monitor in monitors for job, endpoint in _endpoints(monitor)]


def rule_file(rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every group of the PrometheusRules (their `spec`) in one rule file."""
    return {"groups": [group for rule in rules for group in (rule.get("spec") or {}).get("groups") or []]}


def configuration(monitors: Sequence[dict[str, Any]], rules_path: Path, targets_dir: Path, *,
                  scrape_interval: str | None, evaluation_interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval or "30s", "evaluation_interval": evaluation_interval},
        "rule_files": [str(rules_path)],
        "scrape_configs": scrape_configs(monitors, targets_dir, interval=scrape_interval),
    }


def write_targets(monitors: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]], targets_dir: Path) -> None:
    """Every endpoint's `file_sd` file (written aside and renamed: Prometheus never reads half a file)."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    for monitor in monitors:
        for job, endpoint in _endpoints(monitor):
            path = targets_dir / _file(job)
            text = json.dumps(targets(monitor, endpoint, pods), sort_keys=True)
            if not path.exists() or path.read_text() != text:  # unchanged: no rewrite
                aside = path.with_suffix(".tmp")
                aside.write_text(text)
                aside.replace(path)


def discover(home: Path, kubectl: str, kubeconfig: Path, interval: float) -> None:
    """List the pods every `interval` seconds and rewrite the target files (runs until killed)."""
    monitors = json.loads((home / "monitors.json").read_text())
    while True:
        listed = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "get", "pods", "--all-namespaces",
                                 "-o", "json"], capture_output=True, text=True, timeout=30)
        if listed.returncode == 0:
            write_targets(monitors, json.loads(listed.stdout).get("items", []), home / "targets")
        else:
            print(f"discover: kubectl get pods: {listed.stderr.strip()}", file=sys.stderr, flush=True)
        time.sleep(interval)


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
        if daemon.name in (NAME, DISCOVERY):
            processes.stop(daemon, layout.pids)


def start(layout: Layout, monitors: Sequence[dict[str, Any]], rules: Sequence[dict[str, Any]], *,
          scrape_interval: str | None = None, evaluation_interval: str = "5s", port: int = PORT) -> Prometheus:
    """(Re)start Prometheus on 127.0.0.1:`port` for these PodMonitors and PrometheusRules, and the pod discovery
    beside it; ready when it returns (the first targets written)."""
    from digest_cluster.cluster import kubectl_binary

    stop(layout)
    home = layout.root / "services" / NAME
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    (home / "monitors.json").write_text(json.dumps(list(monitors)))
    rules_path = home / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rule_file(rules), sort_keys=False))
    config = home / "prometheus.yaml"
    config.write_text(yaml.safe_dump(configuration(
        monitors, rules_path, home / "targets", scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval), sort_keys=False))
    finder = processes.spawn(DISCOVERY, [sys.executable, "-m", "digest_cluster.prometheus", "discover", "--home",
                                         str(home), "--kubectl", kubectl_binary(), "--kubeconfig",
                                         str(layout.admin_kubeconfig)], layout.logs, layout.pids)
    first = [home / "targets" / _file(job) for monitor in monitors for job, _ in _endpoints(monitor)]
    processes.wait_until(finder, lambda: all(path.exists() for path in first), "the first targets", 60)
    url = f"http://127.0.0.1:{port}"
    daemon = processes.spawn(NAME, [BINARY, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                             layout.logs, layout.pids)
    processes.wait_until(daemon, processes.http_ok(f"{url}/-/ready"), "/-/ready", 60)
    return Prometheus(url, layout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digest_cluster.prometheus")
    commands = parser.add_subparsers(dest="command", required=True)
    found = commands.add_parser("discover", help="keep the file_sd target files of the PodMonitors current")
    found.add_argument("--home", type=Path, required=True)
    found.add_argument("--kubectl", required=True)
    found.add_argument("--kubeconfig", type=Path, required=True)
    found.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    discover(args.home, args.kubectl, args.kubeconfig, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
