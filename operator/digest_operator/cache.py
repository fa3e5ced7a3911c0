"""Watch caches of the objects the operator owns: reconciles read their children here instead of asking the API.

One informer per kind (per watched namespace, or cluster-wide): a paged list, then a watch from the list's
resourceVersion, both restricted server-side by a label selector, so the cache never holds the cluster's other
objects. Bookmarks move the resourceVersion on; a watch the server ends is resumed from it; `410 Gone` (the version
was compacted away, e.g. across an API server restart) lists again and merges the fresh list into the store, which
turns whatever was missed into changes. The operator's own writes go into the store at once (write-through), so
the reconcile after a write never reads the object as it was before; a watch event older than what the store holds
is ignored.

The cache is only a view, and stale reads are tolerated: every write is a server-side apply of the whole desired
object (idempotent), deletes carry a uid precondition, the reconcile reads a child the cache lacks from the API
before creating it (an object without the operator's labels is invisible here), and the status write carries the
resourceVersion it was computed from. An informer that cannot list (RBAC, a bad answer) leaves its kind to direct
reads; a kind the server does not serve (a CRD not installed) reads as empty, as the API would answer, and is
listed again later.

Changes that matter (a DLQ monitor Pod or Job finishing, a worker Pod's status, a Deployment's rollout, a child
deleted or edited by someone else) are reported with the owning pipeline's (namespace, name). Echoes of the
operator's own writes are not, nor status-only updates of kinds whose status no reconcile reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from digest_api import API_VERSION, KIND
from digest_operator.k8s import ApiError
from digest_operator.render import possible_children
from digest_operator.render.meta import MANAGED_BY, PIPELINE_LABEL

logger = logging.getLogger("digest_operator.cache")

Obj = dict[str, Any]
ObjKey = tuple[str | None, str]
"""(namespace, name) of an object of one kind."""
PipelineKey = tuple[str, str]
"""(namespace, name) of a pipeline."""
EventType = Literal["ADDED", "MODIFIED", "DELETED"]

OWNED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
"""Every child, and the DLQ monitor's Jobs, carry it (render/meta.py `labels`)."""
PODS_SELECTOR = "app.kubernetes.io/name=digest-worker"
"""Worker pods carry only the Deployment's selector labels; the DLQ monitor's pods carry this one too."""
INSTANCE_LABEL = "app.kubernetes.io/instance"


# --- label selectors (pure) ------------------------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]
"""(key, operator, values): operator is `in`, `notin`, `exists` or `!exists`."""

_TERM = re.compile(r"^\s*(?P<neg>!)?\s*(?P<key>[^\s!=,()]+)\s*"
                   r"(?:(?P<op>==|=|!=)\s*(?P<val>[^\s,()]*)|(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?\s*$")


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """A label selector (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`) as requirements; ValueError if malformed."""
    result = []
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", text):
        match = _TERM.match(term)
        if match is None or (match["neg"] and (match["op"] or match["setop"])):
            raise ValueError(f"unable to parse requirement: {term!r}")
        key = match["key"]
        if match["op"]:
            result.append((key, "notin" if match["op"] == "!=" else "in", frozenset({match["val"]})))
        elif match["setop"]:
            result.append((key, match["setop"], frozenset(v.strip() for v in match["vals"].split(","))))
        else:
            result.append((key, "!exists" if match["neg"] else "exists", frozenset()))
    return tuple(result)


def selector_matches(requirements: Iterable[Requirement], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        if op == "in" and not (present and labels[key] in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if (op == "exists") != present and op in ("exists", "!exists"):
            return False
    return True


def _narrower(request: Requirement, wanted: Requirement) -> bool:
    """Does every label set that meets `request` meet `wanted` (same key)?"""
    (_, op, values), (_, want_op, want_values) = request, wanted
    if want_op == "in":
        return op == "in" and values <= want_values
    if want_op == "exists":
        return op in ("in", "exists")
    if want_op == "notin":
        return (op == "notin" and values >= want_values) or (op == "in" and not values & want_values) or \
            op == "!exists"
    return op == "!exists"


def implies(request: Sequence[Requirement], informer: Sequence[Requirement]) -> bool:
    """Is everything `request` selects within what `informer` selects? (Then the informer's store can answer.)"""
    return all(any(q[0] == r[0] and _narrower(q, r) for q in request) for r in informer)


# --- kinds -----------------------------------------------------------------------------------------------------

def _without_managed_fields(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _pod_view(obj: Obj) -> Obj:
    """What reconciles read of a Pod: metadata, the containers' names and images, the status."""
    trimmed = _without_managed_fields(obj)
    containers = [{"name": c.get("name"), "image": c.get("image")}
                  for c in (obj.get("spec") or {}).get("containers") or []]
    return {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
            "metadata": trimmed.get("metadata") or {}, "spec": {"containers": containers},
            "status": obj.get("status") or {}}


def _job_view(obj: Obj) -> Obj:
    """What reconciles read of a Job: its metadata (ownership) and status."""
    trimmed = _without_managed_fields(obj)
    return {"apiVersion": obj.get("apiVersion", "batch/v1"), "kind": obj.get("kind", "Job"),
            "metadata": trimmed.get("metadata") or {}, "status": obj.get("status") or {}}


@dataclass(frozen=True)
class Kind:
    """One cached kind: where it is served, the server-side label selector, and what the store keeps."""

    api_version: str
    plural: str
    selector: str = OWNED_SELECTOR
    status_matters: bool = False
    """Status updates are changes that matter (rollout progress, a pod or Job finishing)."""
    view: Callable[[Obj], Obj] = _without_managed_fields
    """What the store keeps of an object (managedFields, never read, are dropped)."""

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return parse_selector(self.selector)


def owned_kinds() -> tuple[Kind, ...]:
    """Every kind a pipeline can own (render.possible_children), the DLQ monitor's Jobs, and the pods reconciles
    read (the worker's during a rollout, the monitor's for its report)."""
    kinds: dict[tuple[str, str], Kind] = {}
    for child in possible_children("x"):
        kinds.setdefault((child.api_version, child.plural), Kind(
            child.api_version, child.plural, status_matters=child.kind == "Deployment"))
    kinds[("batch/v1", "jobs")] = Kind("batch/v1", "jobs", status_matters=True, view=_job_view)
    kinds[("v1", "pods")] = Kind("v1", "pods", PODS_SELECTOR, status_matters=True, view=_pod_view)
    return tuple(kinds.values())


# --- the store (pure) ------------------------------------------------------------------------------------------

def _key(obj: Obj) -> ObjKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace"), str(meta.get("name", ""))


def _version(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def newer(candidate: Obj, stored: Obj) -> bool:
    """Is `candidate` a later version than `stored`? resourceVersions are opaque, but etcd's are increasing
    integers; others (never seen from kube-apiserver) count as newer when they differ."""
    return newer_version(_version(candidate), _version(stored))


def pipeline_of(obj: Obj) -> PipelineKey | None:
    """The pipeline an object belongs to: its controlling DigestPipeline, else the pipeline label (the DLQ monitor's
    Jobs and pods), else the instance label (worker pods). A label proves nothing: it only routes wake-ups; the
    reconcile checks ownership itself."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    if not namespace:
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION:
            return str(namespace), str(ref.get("name"))
    labels = meta.get("labels") or {}
    name = labels.get(PIPELINE_LABEL) or labels.get(INSTANCE_LABEL)
    return (str(namespace), str(name)) if name else None


@dataclass(frozen=True)
class Change:
    type: EventType
    old: Obj | None
    new: Obj | None

    @property
    def obj(self) -> Obj:
        found = self.new if self.new is not None else self.old
        assert found is not None
        return found


def newer_version(a: str, b: str) -> bool:
    """Is resourceVersion `a` later than `b`? (See `newer`.)"""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


@dataclass(slots=True)
class _Entry:
    """One stored object: what the store decides with, and the object itself as compact JSON (a third of the
    memory of the dicts, and decoding it is a reader's own copy, cheaper than a deep copy). Label keys and values
    are interned: ten thousand children share a few keys and one instance name per pipeline."""

    version: str
    uid: str
    namespace: str | None
    labels: dict[str, str]
    owner: PipelineKey | None
    data: bytes

    @classmethod
    def of(cls, obj: Obj) -> _Entry:
        meta = obj.get("metadata") or {}
        labels = {sys.intern(str(k)): sys.intern(str(v)) for k, v in (meta.get("labels") or {}).items()}
        return cls(_version(obj), _uid(obj), meta.get("namespace"), labels, pipeline_of(obj),
                   json.dumps(obj, separators=(",", ":")).encode())

    def decode(self) -> Obj:
        decoded: Obj = json.loads(self.data)
        return decoded


@dataclass
class Store:
    """The objects of one kind, by (namespace, name), with an index by pipeline. Every read decodes a fresh copy:
    a reader may change what it got."""

    view: Callable[[Obj], Obj] = _without_managed_fields
    _entries: dict[ObjKey, _Entry] = field(default_factory=dict)
    by_pipeline: dict[PipelineKey, set[ObjKey]] = field(default_factory=dict)
    _tombstones: dict[ObjKey, str] = field(default_factory=dict)
    """uid of objects the operator deleted, until their DELETED event: a late event of theirs is no resurrection."""

    def __len__(self) -> int:
        return len(self._entries)

    def object_keys(self) -> list[ObjKey]:
        return list(self._entries)

    def get(self, namespace: str | None, name: str) -> Obj | None:
        entry = self._entries.get((namespace, name))
        return entry.decode() if entry is not None else None

    def of_pipeline(self, pipeline: PipelineKey) -> list[Obj]:
        return [self._entries[key].decode() for key in self.by_pipeline.get(pipeline, ())]

    def select(self, namespace: str | None, requirements: Sequence[Requirement]) -> list[Obj]:
        """The objects in `namespace` (None: all) whose labels meet `requirements`."""
        return [entry.decode() for entry in self._entries.values()
                if (namespace is None or entry.namespace == namespace)
                and selector_matches(requirements, entry.labels)]

    def _put(self, key: ObjKey, entry: _Entry | None) -> None:
        old = self._entries.get(key)
        if old is not None and old.owner is not None:
            members = self.by_pipeline.get(old.owner)
            if members is not None:
                members.discard(key)
                if not members:
                    del self.by_pipeline[old.owner]
        if entry is None:
            self._entries.pop(key, None)
            return
        self._entries[key] = entry
        if entry.owner is not None:
            self.by_pipeline.setdefault(entry.owner, set()).add(key)

    def apply(self, type_: str, raw: Obj) -> Change | None:
        """A watch event (or a write's answer, as MODIFIED). None when it changes nothing: an echo of a version
        already held, an older version, a late event of an object the operator deleted."""
        obj = self.view(raw)
        key, version, uid = _key(obj), _version(obj), _uid(obj)
        held = self._entries.get(key)
        if type_ == "DELETED":
            self._tombstones.pop(key, None)
            if held is None or (held.uid != uid and newer_version(held.version, version)):
                return None  # gone already, or a newer namesake (written meanwhile) took its place
            self._put(key, None)
            return Change("DELETED", held.decode(), None)
        if key in self._tombstones:
            if self._tombstones[key] == uid:
                return None
            del self._tombstones[key]
        if held is not None and not newer_version(version, held.version):
            return None
        self._put(key, _Entry.of(obj))
        return Change("ADDED" if held is None else "MODIFIED", held.decode() if held is not None else None, obj)

    def forget(self, namespace: str | None, name: str, uid: str) -> Change | None:
        """The operator deleted this object (with a uid precondition): drop it now, ignore its late events."""
        key = (namespace, name)
        held = self._entries.get(key)
        if held is None or held.uid != uid:
            return None
        self._tombstones[key] = uid
        self._put(key, None)
        return Change("DELETED", held.decode(), None)

    def replace(self, items: Iterable[Obj], version: str) -> list[Change]:
        """Merge a fresh list taken at resourceVersion `version`: what it lacks was deleted, what differs changed.
        An object written by the operator after the list was taken (a newer version than the list's) stays."""
        fresh = {_key(view := self.view(raw)): view for raw in items}
        changes: list[Change] = []
        for key, held in list(self._entries.items()):
            if key not in fresh and not (version and newer_version(held.version, version)):
                self._put(key, None)
                changes.append(Change("DELETED", held.decode(), None))
        for key, obj in fresh.items():
            if self._tombstones.get(key) == _uid(obj):
                continue  # deleted by the operator after the list was taken
            entry = self._entries.get(key)
            if entry is None or newer_version(_version(obj), entry.version):
                self._put(key, _Entry.of(obj))
                changes.append(Change("ADDED" if entry is None else "MODIFIED",
                                      entry.decode() if entry is not None else None, obj))
        self._tombstones = {k: uid for k, uid in self._tombstones.items() if fresh.get(k) and _uid(fresh[k]) == uid}
        return changes


def _significant(kind: Kind, obj: Obj | None) -> Obj:
    """An object without what changes on every write (resourceVersion, managedFields) and, for kinds whose status
    no reconcile reads, without its status."""
    obj = obj or {}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**{k: v for k, v in obj.items() if k != "metadata" and (kind.status_matters or k != "status")},
            "metadata": meta}


def relevant(kind: Kind, change: Change) -> bool:
    """Does a change call for a reconcile of the owning pipeline (before the resync timer)?"""
    if change.type != "MODIFIED":
        return True
    return _significant(kind, change.old) != _significant(kind, change.new)


# --- informers (I/O) -------------------------------------------------------------------------------------------

class WatchClient(Protocol):
    async def list_all(self, api_version: str, plural: str, namespace: str | None, label_selector: str) \
            -> tuple[list[Obj], str]:
        ...

    def watch(self, api_version: str, plural: str, namespace: str | None, label_selector: str,
              resource_version: str, *, server_timeout: int, client_timeout: float) -> AsyncIterator[Obj]:
        ...


class ApiClient(WatchClient, Protocol):
    """What the cache needs of `k8s.KubeClient`: list and watch, and the direct reads and writes it passes on."""

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        ...

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) -> list[Obj]:
        ...

    async def apply(self, obj: Obj, plural: str) -> Obj:
        ...

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        ...


State = Literal["syncing", "ready", "unserved", "unusable"]


@dataclass
class WatchSettings:
    server_timeout: int = 300
    """Seconds the server keeps a watch open (timeoutSeconds); the watch then resumes from the last version."""
    client_timeout: float = 330.0
    """A watch silent for longer (no event, no bookmark) is given up and resumed."""
    backoffs: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    """Delays between attempts after transient errors (the last one repeats)."""
    retry_unavailable: float = 60.0
    """Seconds before listing again a kind that is not served or may not be listed."""


class Informer:
    """List+watch of one kind in one namespace (None: cluster-wide), into a `Store`."""

    def __init__(self, client: WatchClient, kind: Kind, namespace: str | None,
                 on_change: Callable[[Kind, Change], None], settings: WatchSettings) -> None:
        self.client, self.kind, self.namespace = client, kind, namespace
        self.store = Store(view=kind.view)
        self.state: State = "syncing"
        self.synced = asyncio.Event()
        """Set once the kind's first list is in (or the kind turned out unserved or unusable)."""
        self.lists = 0
        """Lists taken (the first, and one per relist)."""
        self._on_change, self._settings = on_change, settings
        self.version = ""

    def __repr__(self) -> str:
        where = self.namespace or "all namespaces"
        return f"<Informer {self.kind.api_version} {self.kind.plural} in {where}: {self.state}>"

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self.version:
                    await self._list()
                await self._watch()
                failures = 0
            except ApiError as exc:
                if exc.status == 410:
                    logger.info("%r: %s; listing again", self, exc.message)
                    self.version = ""
                    continue
                if exc.not_served or not exc.transient:
                    await self._unavailable(exc)
                    continue
                delay = self._settings.backoffs[min(failures, len(self._settings.backoffs) - 1)]
                failures += 1
                logger.debug("%r: %s; retrying in %s s", self, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        items, version = await self.client.list_all(self.kind.api_version, self.kind.plural, self.namespace,
                                                    self.kind.selector)
        first = self.state != "ready"
        changes = self.store.replace(items, version)
        self.version, self.state = version, "ready"
        self.lists += 1
        self.synced.set()
        if not first:  # the first list is the start: every pipeline is reconciled then anyway
            for change in changes:
                self._on_change(self.kind, change)

    async def _watch(self) -> None:
        stream = self.client.watch(self.kind.api_version, self.kind.plural, self.namespace, self.kind.selector,
                                   self.version, server_timeout=self._settings.server_timeout,
                                   client_timeout=self._settings.client_timeout)
        async for event in stream:
            type_, obj = event.get("type"), event.get("object") or {}
            if type_ == "ERROR":
                code = int(obj.get("code") or 0)
                raise ApiError(code, str(obj.get("reason") or "WatchError"), str(obj.get("message") or ""))
            version = _version(obj)
            if type_ in ("ADDED", "MODIFIED", "DELETED"):
                change = self.store.apply(type_, obj)
                if change is not None:
                    self._on_change(self.kind, change)
            if version:
                self.version = version

    async def _unavailable(self, exc: ApiError) -> None:
        """A kind not served (its CRD missing) reads as empty, as the API would answer; a kind that cannot be
        listed (RBAC, a refused request) is read from the API directly. Both are listed again later."""
        state: State = "unserved" if exc.not_served else "unusable"
        if state != self.state:
            level = logging.INFO if state == "unserved" else logging.WARNING
            logger.log(level, "%s %s in %s: %s; %s", self.kind.api_version, self.kind.plural,
                       self.namespace or "all namespaces", exc,
                       "read as empty" if state == "unserved" else "read from the API instead of a cache")
        if state == "unserved":
            for change in self.store.replace([], ""):
                self._on_change(self.kind, change)
        self.state, self.version = state, ""
        self.synced.set()
        await asyncio.sleep(self._settings.retry_unavailable)


_PLAIN_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Cache:
    """The informers of every owned kind, for the namespaces the operator watches; reads, and write-through."""

    def __init__(self, client: ApiClient, *, namespaces: Iterable[str] = (), kinds: Iterable[Kind] | None = None,
                 on_change: Callable[[PipelineKey], None] | None = None,
                 settings: WatchSettings | None = None) -> None:
        self.client = client
        wanted = list(namespaces)
        # plain names: an informer each (works with namespaced RBAC); patterns or none: cluster-wide
        scopes: list[str | None] = list(wanted) if wanted and all(_PLAIN_NAME.match(n) for n in wanted) else [None]
        self._on_change = on_change
        settings = settings or WatchSettings()
        self.informers = {(kind.api_version, kind.plural, scope): Informer(client, kind, scope, self._changed,
                                                                           settings)
                          for kind in (owned_kinds() if kinds is None else kinds) for scope in scopes}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(informer.run(), name=f"cache {informer!r}")
                           for informer in self.informers.values()]

    async def wait_synced(self, within: float) -> bool:
        """Wait until every informer has its first list in; False if some have not within `within` seconds."""
        waits = [informer.synced.wait() for informer in self.informers.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), within)
        return all(informer.synced.is_set() for informer in self.informers.values())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _changed(self, kind: Kind, change: Change) -> None:
        if self._on_change is not None and relevant(kind, change) and (owner := pipeline_of(change.obj)):
            self._on_change(owner)

    def informer(self, api_version: str, plural: str, namespace: str | None) -> Informer | None:
        return self.informers.get((api_version, plural, namespace)) or \
            self.informers.get((api_version, plural, None))

    def _answering(self, api_version: str, plural: str, namespace: str | None) -> Informer | None:
        """The informer that can answer for this kind and namespace (ready, or its kind not served)."""
        informer = self.informer(api_version, plural, namespace)
        return informer if informer is not None and informer.state in ("ready", "unserved") else None

    # --- reads: the reconcile's view of its children --------------------------------------------------------

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        """The cached object (None: absent, or without the operator's labels); from the API when no informer
        can answer."""
        informer = self._answering(api_version, plural, namespace)
        if informer is None:
            return await self.client.get(api_version, plural, namespace, name)
        return informer.store.get(namespace, name)

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) -> list[Obj]:
        """The cached objects matching `label_selector`; from the API when no informer can answer, or when the
        selector may select objects outside the informer's own selector."""
        informer = self._answering(api_version, plural, namespace)
        try:
            wanted = parse_selector(label_selector)
        except ValueError:
            informer = None
        if informer is None or not implies(wanted, informer.kind.requirements):
            return list(await self.client.list(api_version, plural, namespace, label_selector))
        return informer.store.select(namespace, wanted)

    # --- write-through ----------------------------------------------------------------------------------------

    def applied(self, obj: Obj, plural: str) -> None:
        """The answer of the operator's own write of `obj` (a server-side apply)."""
        informer = self.informer(str(obj.get("apiVersion", "")), plural, (obj.get("metadata") or {}).get("namespace"))
        if informer is not None and informer.state == "ready":
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if selector_matches(informer.kind.requirements, labels):
                informer.store.apply("MODIFIED", obj)

    def deleted(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        informer = self.informer(api_version, plural, namespace)
        if informer is not None:
            informer.store.forget(namespace, name, uid)


class CachingApi:
    """The reconcile's API: reads go to the server (fresh), writes too, and what is written lands in the cache."""

    def __init__(self, client: ApiClient, cache: Cache) -> None:
        self.client, self.cache = client, cache

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        return await self.client.get(api_version, plural, namespace, name)

    async def list(self, api_version: str, plural: str, namespace: str | None, label_selector: str) -> list[Obj]:
        return list(await self.client.list(api_version, plural, namespace, label_selector))

    async def apply(self, obj: Obj, plural: str) -> Obj:
        result = await self.client.apply(obj, plural)
        self.cache.applied(result, plural)
        return result

    async def delete(self, api_version: str, plural: str, namespace: str | None, name: str, uid: str) -> None:
        await self.client.delete(api_version, plural, namespace, name, uid)
        self.cache.deleted(api_version, plural, namespace, name, uid)
