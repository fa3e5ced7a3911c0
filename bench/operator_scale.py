"""Operator scale benchmark: N pipelines created at once, against a real control plane (default) or the emulator.

`--api controlplane` (default): etcd + kube-apiserver + kube-controller-manager from `tests/controlplane/build`,
the CRDs installed, the operator running as its service account with the RBAC of `manifests/` (the real Deployment
controller rolls the workers out; a stand-in for KEDA scales each new worker Deployment to zero with its own field
manager). Requests are counted from the API server's audit log. `--api kmock`: the emulated API of
`tests/support/kubeapi.py` with a stand-in Deployment controller; requests counted from its request log.

Baseline, same run, same API: a plain client server-side-applying the very same children (without
ownerReferences, so the garbage collector leaves them), one pipeline's children in order, all pipelines at once
over the operator client's connection limit; its time until every child is applied, and until every baseline
Deployment is rolled out too (what Ready waits for). The operator is a real `digestctl operator --standalone`.

Prints: seconds until all Ready and the ratio to the baseline; the operator's API requests per pipeline by verb
while converging; requests per pipeline per resync in a steady window; requests and writes after a restart (until
every pipeline was reconciled once more, then one resync); the operator's peak RSS.

    uv run python -m bench.operator_scale [--pipelines 200] [--resync 10] [--steady 30] [--api controlplane|kmock]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.report import memory_mib, print_result
from digest_api.parse import parse_pipeline
from digest_operator.k8s import resource_path
from digest_operator.render import possible_children, render_children
from tests.support.kubeconfig import free_port, write_kubeconfig
from tests.support.samples import minimal

DGP = "/apis/digest.dev/v1alpha1/namespaces/{ns}/digestpipelines"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
CONNECTIONS = 64  # the operator client's connection limit (k8s.KubeClient)
BASELINE_AGENT = "bench-baseline"
PLURALS = {ref.kind: ref.plural for ref in possible_children("x")}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


@dataclass
class Client:
    """A small HTTP client for the benchmark's own requests."""

    base: str
    ssl: ssl.SSLContext | bool
    agent: str
    limit: int = CONNECTIONS
    _session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.agent},
                connector=aiohttp.TCPConnector(ssl=self.ssl, limit=self.limit),
                timeout=aiohttp.ClientTimeout(total=120))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                   params: dict[str, str] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(method, self.base + path, data=data, headers=headers,
                                        params=params) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400 and not (method == "GET" and response.status == 404):
                raise RuntimeError(f"{method} {path}: {response.status} {answer}")
            return answer if isinstance(answer, dict) and response.status != 404 else {}

    async def apply(self, obj: dict[str, Any], manager: str) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], PLURALS[obj["kind"]], meta["namespace"], meta["name"])
        return await self.call("PATCH", path, obj, content_type=APPLY,
                               params={"fieldManager": manager, "force": "true"})


# --- the APIs ------------------------------------------------------------------------------------------------

@dataclass
class Api:
    """A running API for the benchmark: where it is, who counts what, and the controllers it lacks."""

    base: str
    tls: ssl.SSLContext | bool
    operator_kubeconfig: Path
    counts: Callable[[int, str], Counter[str]]
    """(mark, whose: "operator" | "baseline") → requests by verb since the mark."""
    mark: Callable[[], int]
    controllers: Callable[[Client, str], Any]
    """(admin client, namespace) → a coroutine playing the controllers the API lacks, run as a task."""
    stop: list[Callable[[], Any]] = field(default_factory=list)


def _verb(method: str, path: str, query: str) -> str:
    """The audit verb of an emulator request (get, list, watch, create, patch, update, delete)."""
    if method == "GET":
        if "watch=true" in query:
            return "watch"
        parts = path.strip("/").split("/")
        return "list" if len(parts) % 2 == (0 if parts[0] == "apis" else 1) else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _key(verb: str, resource: str | None) -> str:
    """Events apart; a request on no resource (/api, /apis, /version) is discovery."""
    return "event" if resource == "events" else verb if resource else "discovery"


@contextlib.asynccontextmanager
async def kmock_api(workdir: Path) -> AsyncIterator[Api]:
    from tests.support.kubeapi import run_kube_api

    async with run_kube_api() as api:
        log = api.emulator.request_log

        def counts(mark: int, whose: str) -> Counter[str]:
            found: Counter[str] = Counter()
            for request in log[mark:]:
                agent = request.headers.get("User-Agent", "")
                mine = agent.startswith(("kopf/", "digest-operator")) if whose == "operator" else \
                    agent == BASELINE_AGENT
                if mine:
                    path = request.url.path
                    parts = path.strip("/").split("/")
                    resource = "events" if "/events" in path else None if len(parts) <= (
                        2 if parts[0] == "api" else 3) else parts[-1]
                    found[_key(_verb(request.method.value, path, request.url.query_string), resource)] += 1
            return found

        async def controllers(client: Client, namespace: str) -> None:
            """KEDA (replicas 0) and the Deployment controller (rollout done) for the namespace's Deployments."""
            base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
            while True:
                for item in (await client.call("GET", base)).get("items", []):
                    meta, status = item["metadata"], item.get("status") or {}
                    if status.get("observedGeneration") == meta.get("generation"):
                        continue
                    path = f"{base}/{meta['name']}"
                    if "replicas" not in item["spec"]:
                        meta = (await client.call("PATCH", path, {"spec": {"replicas": 0}},
                                                  content_type=MERGE))["metadata"]
                    await client.call("PATCH", path + "/status", {"status": {
                        "observedGeneration": meta["generation"], "replicas": 0, "updatedReplicas": 0,
                        "readyReplicas": 0, "availableReplicas": 0}}, content_type=MERGE)
                await asyncio.sleep(0.2)

        kubeconfig = write_kubeconfig(workdir / "operator.kubeconfig", api.url)
        yield Api(api.url, False, kubeconfig, counts, lambda: len(log), controllers)


def _audit_counter(path: Path) -> tuple[Callable[[int, str], Counter[str]], Callable[[], int]]:
    """Counting from the audit log (Metadata level): each request once (by auditID), by verb."""

    def counts(mark: int, whose: str) -> Counter[str]:
        from tests.controlplane.conftest import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE

        user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
        needle = user.encode() if whose == "operator" else f'"userAgent":"{BASELINE_AGENT}"'.encode()
        seen: set[str] = set()
        found: Counter[str] = Counter()
        with path.open("rb") as handle:
            handle.seek(mark)
            for line in handle:
                if needle not in line:
                    continue
                entry = json.loads(line)
                mine = entry["user"]["username"] == user if whose == "operator" else \
                    entry.get("userAgent") == BASELINE_AGENT
                if not mine or entry["auditID"] in seen:
                    continue
                seen.add(entry["auditID"])
                found[_key(entry["verb"], (entry.get("objectRef") or {}).get("resource"))] += 1
        return found

    return counts, lambda: path.stat().st_size


@contextlib.asynccontextmanager
async def controlplane_api(workdir: Path) -> AsyncIterator[Api]:
    from tests.controlplane.conftest import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, ROOT, install_crds
    from tests.support.controlplane import running_control_plane

    with running_control_plane(workdir, before_controllers=install_crds) as plane:
        rendered = plane.kubectl("kustomize", str(ROOT / "manifests" / "rbac")).stdout
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "namespace.yaml"))
        plane.kubectl("apply", "--server-side", "-n", OPERATOR_NAMESPACE, "-f", "-", input=rendered)
        token = plane.kubectl("create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE,
                              "--duration=86400s").stdout.strip()
        kubeconfig = workdir / "operator.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": plane.server,
                                                        "certificate-authority": str(plane.ca_file)}}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "operator"}}]}))
        counts, mark = _audit_counter(plane.audit_log)

        async def controllers(client: Client, namespace: str) -> None:
            """KEDA: every new worker Deployment scaled to zero by its own field manager (no nodes here)."""
            base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
            scaled: set[str] = set()
            pending: set[asyncio.Task[dict[str, Any]]] = set()
            version = ""
            while True:
                params = {"watch": "true", "timeoutSeconds": "300", **({"resourceVersion": version} if version
                                                                         else {})}
                async with client.session.get(client.base + base, params=params,
                                              timeout=aiohttp.ClientTimeout(total=None)) as response:
                    async for line in response.content:
                        event = json.loads(line)
                        meta = event["object"].get("metadata", {})
                        version = meta.get("resourceVersion", version)
                        if event["type"] == "ADDED" and meta.get("name") not in scaled:
                            scaled.add(meta["name"])
                            task = asyncio.get_running_loop().create_task(client.call(
                                "PATCH", f"{base}/{meta['name']}",
                                {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": meta["name"], "namespace": namespace},
                                 "spec": {"replicas": 0}},
                                content_type=APPLY, params={"fieldManager": "keda-hpa"}))
                            pending.add(task)
                            task.add_done_callback(pending.discard)

        yield Api(plane.server, plane.ssl_context(), kubeconfig, counts, mark, controllers)


# --- phases --------------------------------------------------------------------------------------------------

def _rolled_out(item: dict[str, Any]) -> bool:
    status, spec = item.get("status") or {}, item.get("spec") or {}
    return (status.get("observedGeneration") == item["metadata"].get("generation") and spec.get("replicas") == 0
            and not status.get("replicas"))


async def _wait_all(client: Client, path: str, count: int, done: Callable[[dict[str, Any]], bool]) -> None:
    while True:
        items = (await client.call("GET", path)).get("items", [])
        if sum(1 for item in items if done(item)) >= count:
            return
        await asyncio.sleep(1.0)


def _ready(item: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (item.get("status") or {}).get("conditions", []))


async def baseline(api: Api, admin: Client, count: int) -> tuple[float, float]:
    """Seconds until a plain client has applied every child of `count` pipelines, and until their Deployments are
    rolled out."""
    await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": "baseline"}})
    client = Client(api.base, api.tls, BASELINE_AGENT)
    pipelines = [parse_pipeline(minimal(name=f"p{i:04d}", namespace="baseline")) for i in range(count)]

    async def one(children: list[dict[str, Any]]) -> None:
        for obj in children:
            await client.apply(obj, "baseline")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(render_children(p, p.image)) for p in pipelines))
    finally:
        await client.close()
    applied = time.perf_counter() - started
    await _wait_all(admin, "/apis/apps/v1/namespaces/baseline/deployments", count, _rolled_out)
    rolled = time.perf_counter() - started
    # gone before the operator starts: they carry the operator's labels, so its caches would hold them too
    gate = asyncio.Semaphore(CONNECTIONS)

    async def delete(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        async with gate:
            await admin.call("DELETE", resource_path(obj["apiVersion"], PLURALS[obj["kind"]], meta["namespace"],
                                                     meta["name"]))

    await asyncio.gather(*(delete(obj) for p in pipelines for obj in render_children(p, p.image)))
    return applied, rolled


async def _start_operator(api: Api, workdir: Path, resync: float, name: str) -> tuple[asyncio.subprocess.Process,
                                                                                     int]:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(api.operator_kubeconfig), "DIGEST_OPERATOR_RESYNC_SECONDS": str(resync)}
    with (workdir / f"{name}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "digestctl"), "operator", "--standalone", "--probe-port", str(port),
            env=env, stdout=log, stderr=subprocess.STDOUT)
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process, port
            if process.returncode is not None:
                raise RuntimeError(f"the operator exited; see {workdir / f'{name}.log'}")
            await asyncio.sleep(0.1)
    raise TimeoutError("the operator did not become ready")


async def _reconciles(port: int) -> float:
    """digest_operator_reconciles_total, all results, from the operator's metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("digest_operator_reconciles_total{"))


async def _stop(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), timeout=120)


def _per(counts: Counter[str], divisor: float) -> dict[str, float]:
    return {verb: round(n / divisor, 2) for verb, n in sorted(counts.items())}


async def run(pipelines: int, steady: float, resync: float, kind: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    backend = controlplane_api if kind == "controlplane" else kmock_api
    async with backend(workdir) as api:
        admin = Client(api.base, api.tls, "bench-admin")
        players: list[asyncio.Task[None]] = []
        try:
            for namespace in ("baseline", "bench"):
                players.append(asyncio.create_task(api.controllers(admin, namespace)))
            mark = api.mark()
            applied, rolled = await baseline(api, admin, pipelines)
            base_counts = api.counts(mark, "baseline")

            await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
            process, port = await _start_operator(api, workdir, resync, "operator")
            try:
                idle_rss = memory_mib(process.pid, "VmHWM")
                mark = api.mark()
                gate = asyncio.Semaphore(32)

                async def create(i: int) -> None:
                    async with gate:
                        await admin.call("POST", DGP.format(ns="bench"), minimal(name=f"p{i:04d}", namespace="bench"))

                started = time.perf_counter()
                await asyncio.gather(*(create(i) for i in range(pipelines)))
                await _wait_all(admin, DGP.format(ns="bench"), pipelines, _ready)
                to_ready = time.perf_counter() - started
                converge = api.counts(mark, "operator")

                # steady: after two quiet resyncs (the last Events and Kopf's annotations have landed)
                while True:
                    mark = api.mark()
                    await asyncio.sleep(2 * resync)
                    if not WRITE_VERBS & set(api.counts(mark, "operator")):
                        break
                mark = api.mark()
                await asyncio.sleep(steady)
                steady_counts = api.counts(mark, "operator")
                peak_rss = memory_mib(process.pid, "VmHWM")
            finally:
                await _stop(process)

            mark = api.mark()
            started = time.perf_counter()
            process, port = await _start_operator(api, workdir, resync, "restarted")
            try:
                while True:
                    if await _reconciles(port) >= pipelines:  # every pipeline resumed
                        break
                    await asyncio.sleep(0.5)
                resumed = time.perf_counter() - started
                await asyncio.sleep(resync)  # and one resync
                restart = api.counts(mark, "operator")
                restart_rss = memory_mib(process.pid, "VmHWM")
            finally:
                await _stop(process)
        finally:
            for player in players:
                player.cancel()
            await asyncio.gather(*players, return_exceptions=True)
            await admin.close()
    return {
        "api": kind,
        "pipelines": pipelines,
        "resync_seconds": resync,
        "baseline_apply_seconds": round(applied, 2),
        "baseline_rolled_out_seconds": round(rolled, 2),
        "baseline_requests_per_pipeline": _per(base_counts, pipelines),
        "seconds_until_all_ready": round(to_ready, 2),
        "ratio_ready_vs_baseline_rolled_out": round(to_ready / rolled, 2),
        "ratio_ready_vs_baseline_apply": round(to_ready / applied, 2),
        "converging_requests_per_pipeline": _per(converge, pipelines),
        "steady_window_seconds": steady,
        "steady_requests": dict(steady_counts),
        "steady_requests_per_pipeline_per_resync": round(
            sum(steady_counts.values()) / pipelines / (steady / resync), 3),
        "restart_seconds_until_all_resumed": round(resumed, 2),
        "restart_requests": dict(restart),
        "restart_writes": sum(n for verb, n in restart.items() if verb in WRITE_VERBS | {"event"}),
        "operator_idle_rss_mib": round(idle_rss, 1),
        "operator_peak_rss_mib": round(peak_rss, 1),
        "restarted_operator_peak_rss_mib": round(restart_rss, 1),
        "workdir": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--steady", type=float, default=30.0, help="steady-state window in seconds")
    parser.add_argument("--resync", type=float, default=10.0, help="operator resync interval in seconds")
    parser.add_argument("--api", choices=("controlplane", "kmock"), default="controlplane")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = asyncio.run(run(args.pipelines, args.steady, args.resync, args.api))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_result(result)


if __name__ == "__main__":
    main()
