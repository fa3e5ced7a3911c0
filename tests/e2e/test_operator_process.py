"""`digestctl operator` as a real process: kubeconfig login, probes, metrics, Events visible to kubectl, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_operator import DGP, PATHS, complete_rollout, ready
from tests.support.kubeapi import KubeApi
from tests.support.kubeconfig import free_port, write_kubeconfig
from tests.support.samples import minimal

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def _wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        assert process.returncode is None, "operator exited early"
        try:
            if (await _get(url))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def test_operator_process_serves_probes_and_metrics(kube_api: KubeApi, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_api.url)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DIGEST_OPERATOR_RESYNC_SECONDS": "0.5",
           "DIGEST_OPERATOR_RETRY_DELAY": "0.3", "DIGEST_OPERATOR_ERROR_BACKOFFS": "0.1,0.2"}
    log = tmp_path / "operator.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "digestctl"), "operator", "--standalone", "--probe-port", str(port),
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base + "/readyz", process)
        assert (await _get(base + "/healthz"))[0] == 200
        fault = kube_api.fail_next("GET", r"/cronjobs/demo-dlq-monitor$", 500)  # an API error, then retried
        await kube_api.create(DGP, minimal())
        await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None, within=30)
        await complete_rollout(kube_api)
        await kube_api.wait_for(f"{DGP}/demo", ready, within=30)
        fault.assert_consumed()
        status, metrics = await _get(base + "/metrics")
        assert status == 200
        assert 'digest_operator_reconciles_total{result="ok"}' in metrics
        assert 'digest_operator_pipelines{ready="True"} 1.0' in metrics
        assert "digest_operator_reconcile_duration_seconds_bucket" in metrics
        writes = [line for line in metrics.splitlines() if line.startswith("digest_operator_child_writes_total")]
        assert 'digest_operator_child_writes_total{action="Created",kind="Deployment"} 1.0' in writes, writes
        assert 'digest_operator_api_errors_total{code="500"} 1.0' in metrics
        assert 'code="404"' not in metrics  # absent children are answers, not errors

        kubectl = shutil.which("kubectl", path=str(BIN))
        assert kubectl
        kubectl_run = await asyncio.create_subprocess_exec(
            kubectl, "--kubeconfig", str(kubeconfig), "describe", "digestpipelines", "demo",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(kubectl_run.communicate(), timeout=60)
        assert kubectl_run.returncode == 0, err.decode()
        described = out.decode()
        assert "Ready" in described
        assert "Created" in described  # the Event, as `kubectl describe` shows it
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
        output = log.read_text()
    assert process.returncode == 0, output
    assert "test-token" not in output


def test_invalid_settings_exit_with_a_clear_error() -> None:
    env = {**os.environ, "DIGEST_OPERATOR_RESYNC_SECONDS": "soon", "DIGEST_OPERATOR_ERROR_BACKOFFS": "a,b"}
    result = subprocess.run([str(BIN / "digestctl"), "operator", "--standalone"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert "DIGEST_OPERATOR_RESYNC_SECONDS=soon: must be a positive number of seconds" in result.stderr
    assert "DIGEST_OPERATOR_ERROR_BACKOFFS=a,b" in result.stderr


def test_namespaced_watching_with_cluster_peering_is_refused() -> None:
    result = subprocess.run([str(BIN / "digestctl"), "operator", "-n", "team-a"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "--namespace needs --standalone" in result.stderr
