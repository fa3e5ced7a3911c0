"""The Prometheus configuration derived from PodMonitors: pod selection as the Prometheus Operator's relabelling
does it, and a configuration the real `promtool` accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from digest_cluster.prometheus import configuration, rule_file, targets, write_targets

WORKER_LABELS = {"app.kubernetes.io/instance": "load", "app.kubernetes.io/component": "worker"}
MONITOR = {
    "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
    "metadata": {"name": "load-worker", "namespace": "team"},
    "spec": {"selector": {"matchLabels": WORKER_LABELS},
             "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]},
}


def _pod(name: str, ip: str, *, namespace: str = "team", labels: dict[str, str] | None = None,
         phase: str = "Running", port: str = "metrics") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or WORKER_LABELS},
            "spec": {"containers": [{"name": "worker", "ports": [{"name": port, "containerPort": 8080}]}]},
            "status": {"phase": phase, "podIP": ip}}


def test_targets_are_the_running_pods_of_the_selector_with_the_named_port() -> None:
    pods = [
        _pod("load-1", "10.244.0.10"),
        _pod("load-2", "10.244.0.11", phase="Pending"),  # scraped once it has an IP, like the operator's relabelling
        _pod("done", "10.244.0.12", phase="Succeeded"),
        _pod("other", "10.244.0.13", labels={"app.kubernetes.io/instance": "other",
                                             "app.kubernetes.io/component": "worker"}),
        _pod("elsewhere", "10.244.0.14", namespace="other-team"),
        _pod("no-port", "10.244.0.15", port="http"),
        {**_pod("no-ip", ""), "status": {"phase": "Pending"}},
    ]
    endpoint = MONITOR["spec"]["podMetricsEndpoints"][0]  # type: ignore[index]
    assert targets(MONITOR, endpoint, pods) == [
        {"targets": ["10.244.0.10:8080"], "labels": {"namespace": "team", "pod": "load-1", "container": "worker",
                                                       "job": "team/load-worker"}},
        {"targets": ["10.244.0.11:8080"], "labels": {"namespace": "team", "pod": "load-2", "container": "worker",
                                                       "job": "team/load-worker"}},
    ]


def test_the_configuration_passes_promtool_and_files_are_rewritten_only_on_change(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_file([{"spec": {"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "up == 0", "for": "1m"}]}]}}])))
    config = configuration([MONITOR], rules, tmp_path / "targets", scrape_interval="2s", evaluation_interval="2s")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "podMonitor/team/load-worker/0" and job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "2s"  # the override; without it the endpoint's own 15s
    assert configuration([MONITOR], rules, tmp_path, scrape_interval=None,
                         evaluation_interval="5s")["scrape_configs"][0]["scrape_interval"] == "15s"
    write_targets([MONITOR], [_pod("load-1", "10.244.0.10")], tmp_path / "targets")
    (written,) = (tmp_path / "targets").iterdir()
    before = written.stat().st_mtime_ns
    write_targets([MONITOR], [_pod("load-1", "10.244.0.10")], tmp_path / "targets")
    assert written.stat().st_mtime_ns == before
    path = tmp_path / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    checked = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
