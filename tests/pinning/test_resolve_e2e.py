"""End to end: the real Kopf operator resolves tags against a real registry (docker-registry on loopback).

The emulated Kubernetes API stores what the operator applies; the test plays the Deployment controller.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import pytest

from digest_operator.config import OperatorConfig
from tests.e2e.test_operator import (
    DGP,
    NS,
    PATHS,
    complete_rollout,
    condition,
    events,
    wait_for_event,
    wait_for_reconciles,
)
from tests.support.kubeapi import KubeApi
from tests.support.operator_thread import FAST, OperatorThread
from tests.support.registry import PASSWORD, USER, Registry
from tests.support.samples import minimal

pytestmark = pytest.mark.e2e


def config_for(*registries: Registry) -> OperatorConfig:
    return dataclasses.replace(FAST, insecure_registries=tuple(r.host for r in registries), registry_timeout=3,
                               resolve_backoff=0.2, resolve_backoff_max=1.0)


async def start(kube_api: KubeApi, operators: list[OperatorThread], *registries: Registry) -> OperatorThread:
    op = await asyncio.to_thread(OperatorThread(kube_api.url, config=config_for(*registries)).start)
    operators.append(op)
    return op


def worker_image(deployment: dict[str, Any] | None) -> str:
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


async def wait_for_image(kube_api: KubeApi, image: str, within: float = 30) -> dict[str, Any]:
    try:
        deployment = await kube_api.wait_for(PATHS["Deployment"], lambda o: o is not None and worker_image(o) == image,
                                             within=within)
    except TimeoutError:
        print("DIAG pipeline status:", json.dumps((await kube_api.get(f"{DGP}/demo") or {}).get("status"), indent=1))
        raise
    assert deployment is not None
    return deployment


async def request_resolution(kube_api: KubeApi, value: str) -> None:
    await kube_api.patch(f"{DGP}/demo", {"metadata": {"annotations": {"digest.dev/resolve-requested-at": value}}})


async def test_resolve_pins_the_tag_and_records_it(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    digest = await registry.push_image("team/worker", "1.0")
    await start(kube_api, operators, registry)
    tag = f"{registry.host}/team/worker:1.0"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Resolve"}))
    await wait_for_image(kube_api, f"{tag}@{digest}")
    cronjob = await kube_api.wait_for(PATHS["CronJob"], lambda o: o is not None)
    assert cronjob is not None
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == f"{tag}@{digest}"
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("reason")
                                       == "TagResolved")
    assert pipeline is not None
    image = pipeline["status"]["image"]
    assert (image["resolved"], image["digest"], image["requested"]) == (f"{tag}@{digest}", digest, tag)
    assert image["resolvedTime"] and image["resolvedGeneration"] == pipeline["metadata"]["generation"]
    assert digest in await wait_for_event(kube_api, "Normal", "TagResolved")

    # steady state: the recorded resolution is reused, nothing is written (the registry is not asked either)
    await complete_rollout(kube_api)
    await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Ready").get("status") == "True")
    await asyncio.sleep(0.5)  # let the last status write of the convergence land
    mark, runs = kube_api.mark(), operators[0].runtime.reconcile_count
    registry.stop_process()
    await wait_for_reconciles(operators[0], runs + 3)
    assert kube_api.writes(mark) == []


async def test_multi_arch_tag_is_pinned_at_the_index(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    index, platforms = await registry.push_index("team/worker", "multi")
    await start(kube_api, operators, registry)
    tag = f"{registry.host}/team/worker:multi"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Resolve"}))
    deployment = await wait_for_image(kube_api, f"{tag}@{index}")
    assert not any(p in worker_image(deployment) for p in platforms)
    assert "multi-arch index" in await wait_for_event(kube_api, "Normal", "TagResolved")


async def test_moved_tag_rolls_out_on_request_and_registry_outage_fails_static(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    first = await registry.push_image("team/worker", "stable", content="v1")
    await start(kube_api, operators, registry)
    tag = f"{registry.host}/team/worker:stable"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Resolve"}))
    await wait_for_image(kube_api, f"{tag}@{first}")
    await complete_rollout(kube_api)
    await kube_api.wait_for(f"{DGP}/demo", lambda o: (o or {}).get("status", {}).get("rollout", {}).get(
        "phase") == "Complete")

    # the tag moves: Resolve mode does not notice on its own ...
    second = await registry.push_image("team/worker", "stable", content="v2")
    await asyncio.sleep(1.5)  # several resync periods
    assert worker_image(await kube_api.get(PATHS["Deployment"])) == f"{tag}@{first}"
    # ... until a resolution is requested: the new digest rolls out as revision 2
    await request_resolution(kube_api, "2026-11-28T10:00:00Z")
    await wait_for_image(kube_api, f"{tag}@{second}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: (o or {}).get("status", {}).get("rollout", {}).get(
        "revision") == 2)
    assert pipeline is not None
    assert pipeline["status"]["image"]["resolveRequestedAt"] == "2026-11-28T10:00:00Z"
    await complete_rollout(kube_api)

    # registry down: a new request fails static
    registry.stop_process()
    await request_resolution(kube_api, "2026-11-28T11:00:00Z")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("reason")
                                       == "RegistryUnavailable")
    assert condition(pipeline, "ImagePinned")["status"] == "False"
    assert f"still running {tag}@{second}" in condition(pipeline, "ImagePinned")["message"]
    assert "not reachable" in await wait_for_event(kube_api, "Warning", "RegistryUnavailable")
    assert worker_image(await kube_api.get(PATHS["Deployment"])) == f"{tag}@{second}"
    failures = await kube_api.wait_for(f"{DGP}/demo", lambda o: (o or {}).get("status", {}).get("image", {}).get(
        "resolveFailures", 0) >= 2)  # retried with backoff
    assert failures is not None

    # back up: the retry succeeds, the condition recovers, the digest stays (the tag did not move)
    await registry.start()
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("status") == "True")
    assert pipeline is not None
    assert "resolveFailures" not in pipeline["status"]["image"]
    assert worker_image(await kube_api.get(PATHS["Deployment"])) == f"{tag}@{second}"


async def test_resolution_request_does_not_need_the_resync_timer(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    first = await registry.push_image("team/worker", "stable", content="v1")
    slow_timer = dataclasses.replace(config_for(registry), resync_seconds=3600)
    operators.append(await asyncio.to_thread(OperatorThread(kube_api.url, config=slow_timer).start))
    tag = f"{registry.host}/team/worker:stable"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Resolve"}))
    await wait_for_image(kube_api, f"{tag}@{first}")
    second = await registry.push_image("team/worker", "stable", content="v2")
    await request_resolution(kube_api, "now")
    await wait_for_image(kube_api, f"{tag}@{second}")


async def test_track_mode_rolls_out_a_moved_tag(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    first = await registry.push_image("team/worker", "main", content="v1")
    await start(kube_api, operators, registry)
    tag = f"{registry.host}/team/worker:main"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Track", "trackInterval": "1s"}))
    await wait_for_image(kube_api, f"{tag}@{first}")
    await complete_rollout(kube_api)
    second = await registry.push_image("team/worker", "main", content="v2")
    await wait_for_image(kube_api, f"{tag}@{second}")
    await complete_rollout(kube_api)
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: [h.get("result") for h in (o or {}).get(
        "status", {}).get("history", [])] == ["Complete", "Complete"])
    assert pipeline is not None
    assert [h["digest"] for h in pipeline["status"]["history"]] == [second, first]


async def test_track_with_auto_rollback_skips_the_failed_digest_until_the_tag_moves_again(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    from tests.pinning.test_rollout_e2e import report

    good = await registry.push_image("team/worker", "main", content="good")
    await start(kube_api, operators, registry)
    tag = f"{registry.host}/team/worker:main"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Track", "trackInterval": "1s"},
                                       rollout={"autoRollback": True}))
    await report(kube_api, image=f"{tag}@{good}")
    bad = await registry.push_image("team/worker", "main", content="bad")
    await report(kube_api, image=f"{tag}@{bad}", failed=True)  # Track rolled it out; it fails
    await wait_for_image(kube_api, f"{tag}@{good}")  # rolled back
    await report(kube_api, image=f"{tag}@{good}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Degraded").get("reason")
                                       == "RolledBack")
    assert pipeline is not None
    resolved_at = pipeline["status"]["image"]["resolvedTime"]
    # the tag still names the failed digest: Track keeps checking, but does not roll it out again
    await kube_api.wait_for(f"{DGP}/demo", lambda o: (o or {}).get("status", {}).get("image", {}).get(
        "resolvedTime") != resolved_at, within=30)
    assert worker_image(await kube_api.get(PATHS["Deployment"])) == f"{tag}@{good}"
    # a fix is pushed under the tag: it rolls out, and the rollback is over
    fixed = await registry.push_image("team/worker", "main", content="fixed")
    await report(kube_api, image=f"{tag}@{fixed}")
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "Degraded").get("reason")
                                       == "AsExpected")
    assert pipeline is not None and "rollback" not in pipeline["status"]
    assert [h["digest"] for h in pipeline["status"]["history"]][:3] == [fixed, good, bad]


async def test_unknown_tag_deploys_nothing(
    kube_api: KubeApi, operators: list[OperatorThread], registry: Registry,
) -> None:
    await registry.push_image("team/worker", "1.0")
    await start(kube_api, operators, registry)
    await kube_api.create(DGP, minimal(image=f"{registry.host}/team/worker:2.0", imagePolicy={"mode": "Resolve"}))
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("reason")
                                       == "TagNotFound")
    assert condition(pipeline, "Ready")["reason"] == "TagNotFound"
    assert "nothing is deployed" in condition(pipeline, "ImagePinned")["message"]
    await wait_for_event(kube_api, "Warning", "TagNotFound")
    assert await kube_api.get(PATHS["Deployment"]) is None


def pull_secret(name: str, host: str, username: str, password: str) -> dict[str, Any]:
    config = {"auths": {host: {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}}}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}


async def test_pull_secret_credentials_and_unauthorized(
    kube_api: KubeApi, operators: list[OperatorThread], private_registry: Registry,
) -> None:
    registry = private_registry  # htpasswd basic auth, or the bearer-token flow
    digest = await registry.push_image("team/worker", "1.0")
    await start(kube_api, operators, registry)
    await kube_api.create(f"/api/v1/namespaces/{NS}/secrets", pull_secret("wrong", registry.host, USER, "x"))
    await kube_api.create(f"/api/v1/namespaces/{NS}/secrets", pull_secret("right", registry.host, USER,
                                                                          PASSWORD))
    tag = f"{registry.host}/team/worker:1.0"
    await kube_api.create(DGP, minimal(image=tag, imagePolicy={"mode": "Resolve"},
                                       imagePullSecrets=[{"name": "wrong"}]))
    pipeline = await kube_api.wait_for(f"{DGP}/demo", lambda o: condition(o, "ImagePinned").get("reason")
                                       == "Unauthorized")
    message = condition(pipeline, "ImagePinned")["message"]
    assert f"as {USER}" in message
    assert PASSWORD not in json.dumps(await events(kube_api))
    await kube_api.patch(f"{DGP}/demo", {"spec": {"imagePullSecrets": [{"name": "right"}]}})
    await wait_for_image(kube_api, f"{tag}@{digest}")
