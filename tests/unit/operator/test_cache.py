"""The watch cache: label selectors, the store (events, write-through, relist merge, the index by pipeline), which
changes wake a pipeline, and informers driven by a scripted list/watch client."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from digest_operator.cache import (
    OWNED_SELECTOR,
    Cache,
    CachingApi,
    Change,
    Informer,
    Kind,
    Store,
    WatchSettings,
    implies,
    owned_kinds,
    parse_selector,
    pipeline_of,
    relevant,
    selector_matches,
)
from digest_operator.k8s import ApiError
from digest_operator.render import possible_children

OWNED = {"app.kubernetes.io/managed-by": "digest-operator", "digest.dev/pipeline": "demo"}
DEPLOYMENTS = Kind("apps/v1", "deployments", status_matters=True)
SCALED_OBJECTS = Kind("keda.sh/v1alpha1", "scaledobjects")


def obj(name: str, version: int, *, uid: str | None = None, labels: dict[str, str] | None = None,
        owner: str | None = "demo", namespace: str = "ns", **fields: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}",
                            "resourceVersion": str(version), "labels": dict(OWNED if labels is None else labels),
                            "managedFields": [{"manager": "digest-operator"}]}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "digest.dev/v1alpha1", "kind": "DigestPipeline", "name": owner,
                                    "uid": "pipeline-uid", "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, **fields}


# --- selectors -------------------------------------------------------------------------------------------------

def test_selectors_parse_and_match_like_the_api_server() -> None:
    selector = parse_selector("a=1,b==2,c!=3,d,!e,f in (x, y),g notin (z)")
    assert selector_matches(selector, {"a": "1", "b": "2", "d": "", "f": "y", "g": "w"})
    assert selector_matches(selector, {"a": "1", "b": "2", "c": "4", "d": "x", "f": "x"})
    for labels in ({"b": "2", "d": "", "f": "y"}, {"a": "1", "b": "2", "c": "3", "d": "", "f": "y"},
                   {"a": "1", "b": "2", "f": "y"}, {"a": "1", "b": "2", "d": "", "e": "", "f": "y"},
                   {"a": "1", "b": "2", "d": "", "f": "q"}, {"a": "1", "b": "2", "d": "", "f": "y", "g": "z"}):
        assert not selector_matches(selector, labels), labels
    with pytest.raises(ValueError, match="unable to parse"):
        parse_selector("a=1,=b")


def test_a_request_is_answered_from_the_store_only_within_the_informers_selector() -> None:
    informer = parse_selector(OWNED_SELECTOR)
    assert implies(parse_selector(f"digest.dev/pipeline=demo,{OWNED_SELECTOR}"), informer)
    assert implies(parse_selector("app.kubernetes.io/managed-by in (digest-operator)"), informer)
    assert not implies(parse_selector("digest.dev/pipeline=demo"), informer)  # could select unlabelled objects
    assert not implies(parse_selector("app.kubernetes.io/managed-by in (digest-operator,helm)"), informer)
    assert implies(parse_selector("a=1"), parse_selector("a"))
    assert implies(parse_selector("a=1"), parse_selector("a!=2"))
    assert not implies(parse_selector("a"), parse_selector("a!=2"))


def test_the_cached_kinds_cover_every_child_the_jobs_and_the_pods() -> None:
    kinds = {(k.api_version, k.plural): k for k in owned_kinds()}
    assert {(c.api_version, c.plural) for c in possible_children("x")} | {("batch/v1", "jobs"), ("v1", "pods")} \
        == set(kinds)
    assert kinds[("v1", "pods")].selector == "app.kubernetes.io/name=digest-worker"
    assert {k.plural for k in kinds.values() if k.status_matters} == {"deployments", "jobs", "pods"}


# --- the store -------------------------------------------------------------------------------------------------

def test_events_update_the_store_and_echoes_or_older_versions_change_nothing() -> None:
    store = Store()
    added = store.apply("ADDED", obj("w", 5))
    assert added is not None and added.type == "ADDED"
    assert "managedFields" not in (store.get("ns", "w") or {})["metadata"]  # never read: not kept
    assert store.apply("MODIFIED", obj("w", 5)) is None  # the echo of a version already held
    assert store.apply("MODIFIED", obj("w", 4, spec={"x": 1})) is None  # older than what is held
    modified = store.apply("MODIFIED", obj("w", 7, spec={"x": 2}))
    assert modified is not None and modified.type == "MODIFIED" and modified.old is not None
    assert modified.old["metadata"]["resourceVersion"] == "5"
    assert store.get("ns", "w") == modified.new
    deleted = store.apply("DELETED", obj("w", 8))
    assert deleted is not None and deleted.type == "DELETED" and store.get("ns", "w") is None
    assert store.apply("DELETED", obj("w", 9)) is None


def test_a_deletion_event_does_not_remove_a_newer_namesake() -> None:
    store = Store()
    store.apply("ADDED", obj("w", 10, uid="new"))  # written (write-through) before the old one's DELETED arrived
    assert store.apply("DELETED", obj("w", 8, uid="old")) is None
    assert store.get("ns", "w") is not None


def test_the_index_by_pipeline_follows_owners_and_labels() -> None:
    store = Store()
    store.apply("ADDED", obj("child", 1))
    store.apply("ADDED", obj("pod-1", 2, owner=None, labels={"app.kubernetes.io/instance": "demo"}))
    store.apply("ADDED", obj("job-1", 3, owner=None, labels={"digest.dev/pipeline": "other"}))
    store.apply("ADDED", obj("stray", 4, owner=None, labels={}))
    assert sorted(o["metadata"]["name"] for o in store.of_pipeline(("ns", "demo"))) == ["child", "pod-1"]
    assert [o["metadata"]["name"] for o in store.of_pipeline(("ns", "other"))] == ["job-1"]
    store.apply("MODIFIED", obj("pod-1", 5, owner=None, labels={"app.kubernetes.io/instance": "other"}))
    assert [o["metadata"]["name"] for o in store.of_pipeline(("ns", "demo"))] == ["child"]
    store.apply("DELETED", obj("child", 6))
    assert ("ns", "demo") not in store.by_pipeline
    assert pipeline_of(obj("x", 1, namespace="")) is None


def test_a_relist_turns_what_was_missed_into_changes() -> None:
    store = Store()
    for name, version in (("kept", 1), ("edited", 2), ("gone", 3), ("ours", 4)):
        store.apply("ADDED", obj(name, version))
    store.apply("MODIFIED", obj("late", 30))  # the operator wrote it after the list below was taken
    changes = store.replace([obj("kept", 1), obj("edited", 12, spec={"x": 1}), obj("ours", 4), obj("new", 13)],
                            version="20")
    assert sorted((c.type, c.obj["metadata"]["name"]) for c in changes) == [
        ("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "edited")]
    assert sorted(name for _, name in store.object_keys()) == ["edited", "kept", "late", "new", "ours"]


def test_what_the_operator_deleted_is_not_resurrected_by_late_events() -> None:
    store = Store()
    store.apply("ADDED", obj("pruned", 1))
    assert store.forget("ns", "pruned", "someone-else") is None  # a uid precondition: not that object
    gone = store.forget("ns", "pruned", "uid-pruned")
    assert gone is not None and store.get("ns", "pruned") is None
    assert store.apply("MODIFIED", obj("pruned", 2)) is None  # in flight before the deletion
    assert store.replace([obj("pruned", 2)], version="2") == []  # a list taken before the deletion
    assert store.get("ns", "pruned") is None
    assert store.apply("DELETED", obj("pruned", 3)) is None
    recreated = store.apply("ADDED", obj("pruned", 4, uid="new"))
    assert recreated is not None and store.get("ns", "pruned") is not None


# --- which changes wake a pipeline ------------------------------------------------------------------------------

def test_status_updates_wake_only_for_kinds_whose_status_is_read() -> None:
    def change(kind: Kind, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return relevant(kind, Change("MODIFIED", old, new))

    base = obj("w", 1, spec={"a": 1}, status={"replicas": 1})
    assert change(DEPLOYMENTS, base, obj("w", 2, spec={"a": 1}, status={"replicas": 2}))
    assert not change(SCALED_OBJECTS, base, obj("w", 2, spec={"a": 1}, status={"health": {}}))
    assert change(SCALED_OBJECTS, base, obj("w", 2, spec={"a": 2}, status={"replicas": 1}))  # edited: drift
    assert not change(SCALED_OBJECTS, base, obj("w", 2, spec={"a": 1}, status={"replicas": 1}))
    assert relevant(SCALED_OBJECTS, Change("DELETED", base, None))
    assert relevant(SCALED_OBJECTS, Change("ADDED", None, base))


# --- informers --------------------------------------------------------------------------------------------------

HANG = "hang"


class FakeClient:
    """Scripted list and watch answers; the calls made, in order."""

    def __init__(self) -> None:
        self.lists: collections.deque[Any] = collections.deque()
        self.watches: collections.deque[list[Any]] = collections.deque()
        self.calls: list[tuple[str, ...]] = []
        self.objects: dict[str, dict[str, Any]] = {}

    async def list_all(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", plural, label_selector))
        answer = self.lists.popleft() if self.lists else ApiError(503, "ServiceUnavailable", "no more lists")
        if isinstance(answer, Exception):
            raise answer
        items, version = answer
        return list(items), str(version)

    async def watch(self, api_version: str, plural: str, namespace: str | None, label_selector: str,
                    resource_version: str, *, server_timeout: int, client_timeout: float) \
            -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", plural, resource_version))
        script = self.watches.popleft() if self.watches else [HANG]
        for item in script:
            if isinstance(item, Exception):
                raise item
            if item == HANG:
                await asyncio.Event().wait()
            assert isinstance(item, dict)
            yield item

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", plural, name))
        return self.objects.get(name)

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> list[dict[str, Any]]:
        self.calls.append(("direct-list", plural, label_selector))
        return list(self.objects.values())

    async def apply(self, body: dict[str, Any], plural: str) -> dict[str, Any]:
        self.calls.append(("apply", plural, body["metadata"]["name"]))
        return {**body, "metadata": {**body["metadata"], "uid": "uid-applied", "resourceVersion": "50"}}

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        self.calls.append(("delete", plural, name))


FAST = WatchSettings(server_timeout=1, client_timeout=1, backoffs=(0.01,), retry_unavailable=0.05)


async def until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Informer], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(informer: Informer) -> None:
        tasks.append(asyncio.create_task(informer.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_informer_lists_watches_from_the_list_version_and_relists_on_410(
        running: Callable[[Informer], None]) -> None:
    client = FakeClient()
    client.lists.extend([([obj("a", 3), obj("b", 4)], 10), ([obj("a", 28, spec={"x": 2}), obj("c", 25)], 30)])
    client.watches.append([
        {"type": "MODIFIED", "object": obj("a", 11, spec={"x": 1})},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
        ApiError(0, "ConnectionError", "dropped"),
    ])
    client.watches.append([{"type": "DELETED", "object": obj("b", 16)},
                           {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                        "message": "too old resource version: 16 (20)"}}])
    seen: list[tuple[str, str]] = []
    informer = Informer(client, DEPLOYMENTS, None, lambda kind, c: seen.append((c.type, c.obj["metadata"]["name"])),
                        FAST)
    running(informer)
    await until(lambda: informer.lists == 2 and len(client.calls) >= 5)
    assert client.calls == [("list", "deployments", OWNED_SELECTOR), ("watch", "deployments", "10"),
                            ("watch", "deployments", "15"),  # resumed after the bookmark, no list
                            ("list", "deployments", OWNED_SELECTOR), ("watch", "deployments", "30")]
    # the first list starts the cache (no wake-ups); the relist reports what the expired watch missed
    assert seen == [("MODIFIED", "a"), ("DELETED", "b"), ("MODIFIED", "a"), ("ADDED", "c")]
    assert informer.store.get("ns", "a") == informer.store.view(obj("a", 28, spec={"x": 2}))
    assert informer.synced.is_set() and informer.state == "ready"


async def test_a_kind_not_served_reads_as_empty_and_one_that_cannot_be_listed_reads_from_the_api(
        running: Callable[[Informer], None]) -> None:
    client = FakeClient()
    client.objects["x"] = obj("x", 1)
    keda, pods = Kind("keda.sh/v1alpha1", "scaledobjects"), Kind("v1", "pods", "app.kubernetes.io/name=w")
    cache = Cache(client, kinds=[keda, pods], settings=FAST)
    client.lists.extend([ApiError(404, "NotFound", "404 page not found", not_served=True),
                         ApiError(403, "Forbidden", "cannot list pods")])
    for informer in cache.informers.values():
        running(informer)
    assert await cache.wait_synced(2.0)
    assert {i.kind.plural: i.state for i in cache.informers.values()} == {"scaledobjects": "unserved",
                                                                          "pods": "unusable"}
    client.calls.clear()
    assert await cache.get("keda.sh/v1alpha1", "scaledobjects", "ns", "x") is None
    assert await cache.get("v1", "pods", "ns", "x") == obj("x", 1)
    assert client.calls == [("get", "pods", "x")]
    # listed again later: once served, the cache answers
    client.lists.append(([obj("so", 2)], 5))
    served = cache.informer("keda.sh/v1alpha1", "scaledobjects", "ns")
    assert served is not None
    await until(lambda: served.state == "ready")
    assert await cache.get("keda.sh/v1alpha1", "scaledobjects", "ns", "so") is not None


async def test_reads_come_from_the_store_and_writes_land_in_it(running: Callable[[Informer], None]) -> None:
    client = FakeClient()
    client.lists.append(([obj("w", 3, spec={"v": 1})], 10))
    client.objects["w"] = obj("w", 3, spec={"v": 1})
    woken: list[tuple[str, str]] = []
    cache = Cache(client, kinds=[DEPLOYMENTS], on_change=woken.append, settings=FAST)
    (informer,) = cache.informers.values()
    watch: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def stream(*_: Any, **__: Any) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await watch.get()

    client.watch = stream  # type: ignore[method-assign]
    running(informer)
    assert await cache.wait_synced(2.0)
    client.calls.clear()
    read = await cache.get("apps/v1", "deployments", "ns", "w")
    assert read is not None and read["spec"] == {"v": 1}
    read["spec"]["v"] = 99  # a reader's copy: the store is unchanged
    assert [o["metadata"]["name"] for o in await cache.list(
        "apps/v1", "deployments", "ns", f"digest.dev/pipeline=demo,{OWNED_SELECTOR}")] == ["w"]
    assert await cache.get("apps/v1", "deployments", "ns", "absent") is None
    assert client.calls == []  # nothing asked the API
    assert await cache.list("apps/v1", "deployments", "ns", "digest.dev/pipeline=demo") == [obj("w", 3, spec={
        "v": 1})]  # a selector wider than the informer's: asked the API
    assert client.calls == [("direct-list", "deployments", "digest.dev/pipeline=demo")]

    api = CachingApi(client, cache)
    applied = await api.apply(obj("w", 0, spec={"v": 2}), "deployments")
    assert (await cache.get("apps/v1", "deployments", "ns", "w") or {}).get("spec") == {"v": 2}
    await watch.put({"type": "MODIFIED", "object": applied})  # the echo of the operator's write
    await watch.put({"type": "MODIFIED", "object": obj("w", 60, uid="uid-applied", spec={"v": 2},
                                                                status={"ready": 1})})
    await until(lambda: informer.version == "60")
    assert woken == [("ns", "demo")]  # the Deployment's status, not the echo
    await api.delete("apps/v1", "deployments", "ns", "w", "uid-applied")
    assert await cache.get("apps/v1", "deployments", "ns", "w") is None
    unlabelled = await api.apply(obj("stranger", 0, labels={}), "deployments")
    assert unlabelled["metadata"]["name"] == "stranger"
    assert await cache.get("apps/v1", "deployments", "ns", "stranger") is None  # never watched: not kept


async def test_namespaces_get_an_informer_each_and_patterns_one_cluster_wide() -> None:
    client = FakeClient()
    per_namespace = Cache(client, namespaces=["a", "b"], kinds=[DEPLOYMENTS])
    assert sorted(str(scope) for _, _, scope in per_namespace.informers) == ["a", "b"]
    assert per_namespace.informer("apps/v1", "deployments", "c") is None
    wide = Cache(client, namespaces=["team-*"], kinds=[DEPLOYMENTS])
    assert [scope for _, _, scope in wide.informers] == [None]
