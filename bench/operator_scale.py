"""Operator scale benchmark: N pipelines created at once against the emulated Kubernetes API.

Prints: time until all pipelines are Ready, API requests per pipeline (reads and writes separately, Events apart),
writes during a steady-state window (target 0), and the operator's peak RSS. The operator runs as a real
`digestctl operator` process. The baseline, measured in the same run on the same emulator, is a plain client
server-side-applying the very same child objects directly: the floor for N pipelines' worth of writes here, so the
ratio says how much the operator (watching, reading, status, Events, Kopf bookkeeping) costs on top of it.

    uv run python -m bench.operator_scale [--pipelines 200] [--steady 30] [--resync 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.report import memory_mib, print_result
from digest_api.parse import parse_pipeline
from digest_operator.render import ChildRef, possible_children, render_children
from tests.support.kubeapi import KubeApi, run_kube_api
from tests.support.kubeconfig import free_port, write_kubeconfig
from tests.support.samples import minimal

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DGP = "/apis/digest.dev/v1alpha1/namespaces/{ns}/digestpipelines"
CONTROLLER_AGENT = "bench-deployment-controller"


def _operator_requests(api: KubeApi, since: int) -> Counter[str]:
    """Requests made by the operator process (Kopf and our client), by class."""
    counts: Counter[str] = Counter()
    for request in api.emulator.request_log[since:]:
        agent = request.headers.get("User-Agent", "")
        if not agent.startswith(("kopf/", "digest-operator")):
            continue
        method = request.method.value
        if "/events" in request.url.path:
            counts["events"] += 1
        elif method in WRITE_METHODS:
            counts["writes"] += 1
        else:
            counts["reads"] += 1
    return counts


def _plural(ref_by_kind: dict[str, ChildRef], kind: str) -> str:
    return ref_by_kind[kind].plural


async def baseline(api: KubeApi, count: int, concurrency: int = 16) -> float:
    """Seconds for a plain client to server-side-apply every child of `count` pipelines."""
    objects = []
    for i in range(count):
        body = minimal(name=f"p{i:04d}", namespace="baseline")
        body["metadata"]["uid"] = f"baseline-{i}"
        pipeline = parse_pipeline(body)
        objects.extend(render_children(pipeline, pipeline.image))
    refs = {ref.kind: ref for ref in possible_children("x")}
    gate = asyncio.Semaphore(concurrency)

    async def apply(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        prefix = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
        path = f"{prefix}/namespaces/{meta['namespace']}/{_plural(refs, obj['kind'])}/{meta['name']}"
        async with gate:
            await api.apply(path, obj, field_manager="baseline")

    started = time.perf_counter()
    await asyncio.gather(*(apply(obj) for obj in objects))
    return time.perf_counter() - started


async def deployment_controller(api: KubeApi, namespace: str) -> None:
    """Plays KEDA (replicas 0) and the Deployment controller (rollout done) for the benchmark's Deployments."""
    headers = {"User-Agent": CONTROLLER_AGENT}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            async with session.get(f"{api.url}/apis/apps/v1/namespaces/{namespace}/deployments") as response:
                items = (await response.json())["items"]
            for item in items:
                meta, status = item["metadata"], item.get("status") or {}
                if status.get("observedGeneration") == meta.get("generation"):
                    continue
                base = f"{api.url}/apis/apps/v1/namespaces/{namespace}/deployments/{meta['name']}"
                merge = {"Content-Type": "application/merge-patch+json"}
                if "replicas" not in item["spec"]:
                    await session.patch(base, data=json.dumps({"spec": {"replicas": 0}}), headers=merge)
                    meta["generation"] = (await (await session.get(base)).json())["metadata"]["generation"]
                await session.patch(base + "/status", headers=merge, data=json.dumps({"status": {
                    "observedGeneration": meta["generation"], "replicas": 0, "updatedReplicas": 0,
                    "readyReplicas": 0, "availableReplicas": 0}}))
            await asyncio.sleep(0.2)


def _ready_count(listing: dict[str, Any]) -> int:
    ready = 0
    for item in listing.get("items", []):
        for cond in (item.get("status") or {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready += 1
    return ready


async def run(pipelines: int, steady: float, resync: float) -> dict[str, Any]:
    async with run_kube_api() as api:
        base_seconds = await baseline(api, pipelines)

        workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", api.url)
        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DIGEST_OPERATOR_RESYNC_SECONDS": str(resync)}
        digestctl = Path(sys.executable).parent / "digestctl"
        with (workdir / "operator.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(digestctl), "operator", "--standalone", "--probe-port", str(port),
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        controller = asyncio.create_task(deployment_controller(api, "bench"))
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(600):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status == 200:
                                break
                    await asyncio.sleep(0.1)
            idle_rss = memory_mib(process.pid, "VmHWM")

            mark = api.mark()
            gate = asyncio.Semaphore(32)

            async def create(i: int) -> None:
                async with gate:
                    await api.create(DGP.format(ns="bench"), minimal(name=f"p{i:04d}", namespace="bench"))

            started = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(pipelines)))
            while True:
                listing = await api.get(DGP.format(ns="bench")) or {}
                if _ready_count(listing) == pipelines:
                    break
                await asyncio.sleep(0.25)
            to_ready = time.perf_counter() - started
            converge = _operator_requests(api, mark)

            await asyncio.sleep(1.0)  # let Events of the last transitions be posted
            mark = api.mark()
            await asyncio.sleep(steady)
            steady_counts = _operator_requests(api, mark)
            peak_rss = memory_mib(process.pid, "VmHWM")
        finally:
            controller.cancel()
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=60)
    return {
        "pipelines": pipelines,
        "baseline_apply_seconds": round(base_seconds, 2),
        "seconds_until_all_ready": round(to_ready, 2),
        "ratio_ready_vs_baseline": round(to_ready / base_seconds, 2),
        "reads_per_pipeline": round(converge["reads"] / pipelines, 1),
        "writes_per_pipeline": round(converge["writes"] / pipelines, 1),
        "events_per_pipeline": round(converge["events"] / pipelines, 1),
        "steady_window_seconds": steady,
        "steady_writes": steady_counts["writes"] + steady_counts["events"],
        "steady_reads_per_pipeline_per_resync": round(
            steady_counts["reads"] / pipelines / max(steady / resync, 1e-9), 1),
        "operator_idle_rss_mib": round(idle_rss, 1),
        "operator_peak_rss_mib": round(peak_rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--steady", type=float, default=30.0, help="steady-state window in seconds")
    parser.add_argument("--resync", type=float, default=10.0, help="operator resync interval in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = asyncio.run(run(args.pipelines, args.steady, args.resync))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_result(result)


if __name__ == "__main__":
    main()
