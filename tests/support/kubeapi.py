"""
A kube-apiserver emulator for e2e tests: kmock's ``KubernetesEmulator`` plus the behaviour of a real server.

kmock is pinned to ``0.8.*`` (pyproject: ``kmock>=0.8,<0.9``): this module relies on kmock internals that may change
in 0.9: ``KubernetesEmulator._handle`` / ``_serve_*``, the private ``_buses`` / ``_lock`` / ``_requests`` fields and
``kmock._internal.dicts``.

Added on top of stock kmock 0.8 (see /work/shared/notes/kmock-facts.md for its gaps):

- metadata: ``uid``, ``creationTimestamp``, ``generation``, a global ``resourceVersion``, ``generateName``;
- 201 on create; a status subresource kept apart from the main endpoint; no-op writes change nothing;
- patch content types: merge, strategic merge (as merge), JSON patch (failures are 422), server-side apply
  (a recursive merge that creates a missing object; no field ownership or conflicts); PUT (replace);
- ``metadata.resourceVersion`` in a write body is a precondition (409 Conflict when stale);
- background garbage collection by ``ownerReferences`` (multiple owners, dependents' finalizers respected);
- lists with ``kind``/``apiVersion``/``resourceVersion``; label and field selectors on lists and watches;
- ``/api/v1/namespaces[/name]`` (kmock 0.8 cannot parse these paths);
- pre-commit fault injection (``fail_next``; each ``Fault`` records the requests it failed), ``/healthz``,
  ``/readyz``, ``/livez``, trailing-slash discovery;
- ``unserved_groups``: API groups the server does not serve (e.g. ``keda.sh`` without KEDA's CRDs), answered as
  kube-apiserver's router answers them: 404 with the plain-text body ``404 page not found``; absent from discovery.

Writes to ``/status`` and main endpoints are committed here, into ``emulator.objects`` (one history version per
real change) and kmock's watch streams, instead of kmock's own write path. The untouched request then goes through
the user-defined kmock reactions (so a DSL fault still means "failed after commit") and finally the fallbacks,
which respond with the committed object. Other subresources (e.g. ``/scale``) keep kmock's behaviour.
"""
import asyncio
import contextlib
import copy
import dataclasses
import datetime
import functools
import json
import random
import re
import string
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import dicts

JsonDict = dict[str, Any]
ObjKey = tuple[kmock.resource, str | None, str]

WRITES = {'POST', 'PUT', 'PATCH', 'DELETE'}
APPLY, JSON_PATCH = 'application/apply-patch+yaml', 'application/json-patch+json'
MERGE_TYPES = {'application/merge-patch+json', 'application/strategic-merge-patch+json'}
REASONS = {400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict',
           410: 'Expired', 415: 'UnsupportedMediaType', 422: 'Invalid', 429: 'TooManyRequests',
           500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout'}
VERBS = {'create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'}
CUSTOM_RESOURCES = {  # plural path -> (kind, namespaced, shortnames, subresources)
    'digest.dev/v1alpha1/digestpipelines': ('DigestPipeline', True, {'dgp'}, {'status'}),
    'keda.sh/v1alpha1/scaledobjects': ('ScaledObject', True, {'so'}, {'status'}),
    'keda.sh/v1alpha1/triggerauthentications': ('TriggerAuthentication', True, {'ta', 'triggerauth'}, set()),
    'monitoring.coreos.com/v1/podmonitors': ('PodMonitor', True, {'pmon'}, set()),
    'monitoring.coreos.com/v1/prometheusrules': ('PrometheusRule', True, {'promrule'}, set()),
    'kopf.dev/v1/kopfpeerings': ('KopfPeering', True, set(), set()),
    'kopf.dev/v1/clusterkopfpeerings': ('ClusterKopfPeering', False, set(), set()),
}
# kmock 0.8 cannot parse these paths (it takes "namespaces" for the namespace prefix): they are parsed as an alias.
_NAMESPACE_PATH = re.compile(r'/api/v1/namespaces((?:/[^/]+(?:/status|/finalize)?)?/?)')
_NAMESPACE_ALIAS = 'kubeapi-emulator-namespaces'
_SELECTOR_TERM = re.compile(r'^\s*(?P<neg>!)?\s*(?P<key>[^\s!=,()]+)\s*'
                            r'(?:(?P<op>==|=|!=)\s*(?P<val>[^\s,()]*)|(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?\s*$')


def api_error(status: int, message: str, reason: str | None = None) -> kmock.KubernetesError:
    reason = reason or REASONS.get(status, 'Unknown')
    return kmock.KubernetesError(status=status, message=message, reason=reason)


def status_body(status: int, reason: str, message: str) -> JsonDict:
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'reason': reason, 'message': message, 'code': status}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _generation_fields(obj: Mapping[str, Any]) -> JsonDict:
    return {key: val for key, val in obj.items() if key not in {'apiVersion', 'kind', 'metadata', 'status'}}


def matches_selector(selector: str, get: Callable[[str], str | None]) -> bool:
    """Equality- and set-based selectors: ``a=b,c!=d,e,!f,g in (x,y),h notin (z)``."""
    for term in re.findall(r'(?:[^,(]|\([^)]*\))+', selector):
        if (m := _SELECTOR_TERM.match(term)) is None:
            raise api_error(400, f'unable to parse requirement: {term!r}')
        value = get(m['key'])
        if m['op']:
            ok = (value != m['val']) if m['op'] == '!=' else (value == m['val'])
        elif m['setop']:
            ok = (value in {v.strip() for v in m['vals'].split(',')}) == (m['setop'] == 'in')
        else:
            ok = value is not None
        if ok == bool(m['neg']):
            return False
    return True


def _drop_unapplied(live: JsonDict, previous: Mapping[str, Any], current: Mapping[str, Any]) -> JsonDict:
    """`live` without the fields `previous` applied and `current` no longer applies (lists are atomic)."""
    result = copy.deepcopy(live)
    for key, old in previous.items():
        if key not in current:
            result.pop(key, None)
        elif isinstance(old, dict) and isinstance(current[key], dict) and isinstance(result.get(key), dict):
            result[key] = _drop_unapplied(result[key], old, current[key])
    return result


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split('.'):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value if value is None or isinstance(value, str) else json.dumps(value)


@functools.cache
def _bundled_resources() -> dict[kmock.resource, kmock.ResourceInfo]:
    resources = kmock.ResourcesArray()
    with warnings.catch_warnings():  # kmock 0.8 reads its bundled file with importlib.resources.read_binary()
        warnings.simplefilter('ignore', DeprecationWarning)
        resources.load_bundled()
    return {resource: resources[resource] for resource in resources}


@dataclasses.dataclass
class Fault:
    """One ``fail_next`` injection: the first ``times`` requests matching ``method`` and ``path`` get ``status``.

    ``fired`` records each request that got the error (``METHOD path``), so that a test can show its fault was
    exercised: a fault whose pattern no request matches (a renamed path, another verb) fails nothing, and a test
    that only checks convergence would pass without any error handling having run.
    """
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    reason: str
    fired: list[str] = dataclasses.field(default_factory=list)

    @property
    def left(self) -> int:
        """How many more matching requests will fail."""
        return self.times - len(self.fired)

    def describe(self) -> str:
        return (f'{self.method} {self.path.pattern} -> {self.status} x{self.times}: '
                f'fired {len(self.fired)} time(s) {self.fired}')

    def assert_consumed(self) -> None:
        """The fault fired exactly ``times`` times (a fault never fires more often than that)."""
        assert not self.left, f'injected fault not consumed: {self.describe()}'


@attrs.define(kw_only=True)
class KubeApiEmulator(kmock.KubernetesEmulator):
    gc_delay: float = 0.05  # seconds between an owner's removal and the collection of its dependents
    unserved_groups: frozenset[str] = frozenset()  # e.g. {'keda.sh'}: as if their CRDs were not installed
    _rv: int = attrs.field(default=0, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _results: dict[int, JsonDict] = attrs.field(factory=dict, init=False)  # request.id -> object to respond
    # server-side apply: the last configuration each field manager applied to each object, so that fields a
    # manager stops applying are removed, as real field ownership does (a simplification: no managedFields)
    _applied: dict[tuple[ObjKey, str], JsonDict] = attrs.field(factory=dict, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _gc_tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)
    _in_flight: int = attrs.field(default=0, init=False)

    # kmock matches each request to its reactions by scanning the request log for it (quadratic in the number of
    # requests: 45 ms per request after 400). A request is matched while it is in flight, and at most the requests
    # in flight arrived after it, so the DSL only needs that tail of the log. No reaction here uses slices or
    # counts of past requests; the full log is `request_log`.
    def __iter__(self) -> Iterator[kmock.Request]:
        yield from self._requests[-(self._in_flight + 16):]

    @property
    def request_log(self) -> list[kmock.Request]:
        """Every request received, in order."""
        return self._requests

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for probe in ('healthz', 'readyz', 'livez'):
            self.fallback[f'get /{probe}'] << b'ok'
        self.fallback[kmock.method.PUT] << self._serve_update
        slash = (self.fallback ** 1)['get']  # above kmock's LIST fallback, which catches /apis/g/v/
        slash['/api/'] << self._serve_api
        slash['/apis/'] << self._serve_apis
        slash['/version/'] << self._serve_server_version
        slash[re.compile(r'/apis/[^/]+/[^/]+/|/api/[^/]+/')] << self._serve_version
        slash[re.compile(r'/apis/[^/]+/')] << self._serve_group
        for resource, info in _bundled_resources().items():  # as load_bundled(), but parsed once per process
            if resource.group not in self.unserved_groups:
                self.resources[resource] = attrs.evolve(info)  # copies the sets
        for path, (kind, namespaced, shortnames, subresources) in CUSTOM_RESOURCES.items():
            if path.split('/', 1)[0] in self.unserved_groups:
                continue
            self.resources[path] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS,
                shortnames=shortnames, subresources=subresources)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        for task in list(self._gc_tasks):
            task.cancel()
        await asyncio.gather(*self._gc_tasks, return_exceptions=True)
        await super().__aexit__(exc_type, exc_value, traceback)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if match := _NAMESPACE_PATH.fullmatch(raw_request.path):
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(
                f'/api/v1/{_NAMESPACE_ALIAS}{match[1]}').with_query(raw_request.rel_url.query))
        self._in_flight += 1
        try:
            return await super().__call__(raw_request)
        finally:
            self._in_flight -= 1

    def fail_next(self, method: str, path_pattern: str, status: int, times: int = 1,
                  reason: str | None = None) -> Fault:
        """Fail the next ``times`` requests matching the method (or ``*``) and path regex; store nothing.

        Returns the fault, whose ``fired`` list records the requests it failed (see ``Fault.assert_consumed``)."""
        if times < 1:
            raise ValueError(f'times must be at least 1, not {times}')
        fault = Fault(method.upper(), re.compile(path_pattern), status, times, reason or REASONS.get(status, 'Unknown'))
        self._faults.append(fault)
        return fault

    @property
    def faults(self) -> list[Fault]:
        """Every fault injected with ``fail_next``, in order, with what each has fired."""
        return list(self._faults)

    @property
    def resource_version(self) -> int:
        return self._rv

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        if resource not in self.resources:  # NB: ResourcesArray.__getitem__/.get() would add an empty entry
            return None
        return self.resources[resource]

    def _has_status(self, resource: kmock.resource) -> bool:
        return (info := self._info(resource)) is not None and 'status' in info.subresources

    def _live(self, key: ObjKey) -> JsonDict | None:
        found = key in self.objects and not self.objects[key].deleted
        return copy.deepcopy(self.objects[key].raw) if found else None

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural == _NAMESPACE_ALIAS:
            path = request.url.path.replace(_NAMESPACE_ALIAS, 'namespaces', 1)
            fixed = attrs.evolve(request, url=request.url.with_path(path).with_query(request.url.query),
                                 resource=kmock.resource('', 'v1', 'namespaces'))
            if self._requests[request.id:][:1] == [request]:  # kmock's reactions match logged requests by identity
                self._requests[request.id] = request = fixed
        path, method = request.url.path, request.method.value.upper()
        if path.startswith('/apis/') and path.split('/')[2] in self.unserved_groups:
            # kube-apiserver's NotFoundHandler: the route does not exist, so there is no Status object
            return aiohttp.web.Response(status=404, text='404 page not found\n', content_type='text/plain')
        for fault in self._faults:
            if fault.left > 0 and fault.method in {'*', method} and fault.path.search(path):
                fault.fired.append(f'{method} {path}')
                return aiohttp.web.json_response(
                    status_body(fault.status, fault.reason, f'injected fault for {method} {path}'),
                    status=fault.status, headers={'Retry-After': '1'} if fault.status == 429 else None)
        if request.resource is None or request.resource.plural is None or method not in WRITES:
            return await super()._handle(request)
        async with self._write_lock:
            return await self._write(request)

    async def _react(self, request: kmock.Request, result: JsonDict, status: int = 200) -> aiohttp.web.StreamResponse:
        """Serve a write already committed here: user reactions first, then the fallbacks render ``result``."""
        self._results[request.id] = result
        response = await super(kmock.KubernetesEmulator, self)._handle(request)  # skip kmock's own writes
        if status != 200 and response.status == 200 and not response.prepared:
            response.set_status(status)
        return response

    async def _write(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        ctype = next((v for k, v in request.headers.items() if k.lower() == 'content-type'), '')
        ctype = ctype.split(';')[0].strip().lower()
        body = yaml.safe_load(request.text) if ctype == APPLY else request.data
        if request.action == kmock.action.CREATE:
            return await self._react(request, await self._create(request, body), 201)
        if request.name is None or request.subresource not in {None, 'status'} or request.method.value == 'POST':
            return await super()._handle(request)  # kmock's own (merge-only) behaviour, e.g. for /scale
        key: ObjKey = (request.resource, request.namespace, request.name)
        live = self._live(key)
        what = f'{request.resource.plural} "{request.name}"'
        if live is None and ctype == APPLY and request.method.value == 'PATCH' and not request.subresource:
            self._check_apply(request, body)
            self._applied[(key, request.params.get('fieldManager', ''))] = copy.deepcopy(body)
            return await self._react(request, await self._create(request, body), 201)
        if live is None:
            raise api_error(404, f'{what} not found')
        if request.method.value == 'DELETE':
            return await self._react(request, await self._delete(request, key, live))
        if request.subresource == 'status' and not self._has_status(request.resource):
            raise api_error(404, f'{what} has no status subresource')
        wanted_rv = body.get('metadata', {}).get('resourceVersion') if isinstance(body, dict) else None
        if wanted_rv and wanted_rv != live.get('metadata', {}).get('resourceVersion'):
            raise api_error(409, f'Operation cannot be fulfilled on {what}: the object has been modified; '
                                 'please apply your changes to the latest version and try again')
        new = self._updated(request, ctype, body, live)
        if new == live:  # a no-op write: no new resourceVersion, no watch event (as in a real server)
            return await self._react(request, live)
        new['metadata']['resourceVersion'] = self._next_rv()
        if _generation_fields(new) != _generation_fields(live):
            new['metadata']['generation'] = live['metadata'].get('generation', 0) + 1
        await self._store(key, new, 'MODIFIED')
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            await self._remove(key)  # the last finalizer is gone
        return await self._react(request, new)

    def _check_apply(self, request: kmock.Request, body: Any) -> None:
        if not request.params.get('fieldManager'):
            raise api_error(422, 'fieldManager: Required value: is required for apply patch')
        if not isinstance(body, dict) or not body.get('apiVersion') or not body.get('kind'):
            raise api_error(400, 'apply patches need an object with apiVersion and kind')

    async def _create(self, request: kmock.Request, body: Any) -> JsonDict:
        assert request.resource is not None
        if not isinstance(body, dict) or not isinstance(body.get('metadata', {}), dict):
            raise api_error(400, 'the body of the request must be an object')
        obj: JsonDict = copy.deepcopy(body)
        meta: JsonDict = obj.setdefault('metadata', {})
        if request.namespace and meta.setdefault('namespace', request.namespace) != request.namespace:
            raise api_error(400, 'the namespace of the object does not match the namespace of the request')
        if request.name:
            meta.setdefault('name', request.name)
        namespace = request.namespace or meta.get('namespace')
        while not meta.get('name') and meta.get('generateName'):
            name = meta['generateName'] + ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta['name'] = None if self._live((request.resource, namespace, name)) else name
        if not meta.get('name'):
            raise api_error(422, 'metadata.name: Required value: name or generateName is required')
        if self._live((request.resource, namespace, meta['name'])):
            raise api_error(409, f'{request.resource.plural} "{meta["name"]}" already exists',
                            reason='AlreadyExists')
        for field in ('deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                    resourceVersion=self._next_rv())
        if self._has_status(request.resource):
            obj.pop('status', None)
        group, version, info = request.resource.group, request.resource.version, self._info(request.resource)
        obj.setdefault('apiVersion', f'{group}/{version}' if group else version)
        if info is not None and info.kind:
            obj.setdefault('kind', info.kind)
        await self._store((request.resource, namespace, meta['name']), obj, 'ADDED')
        return obj

    def _updated(self, request: kmock.Request, ctype: str, body: Any, live: JsonDict) -> JsonDict:
        """The whole object after a PUT/PATCH, keeping server-owned metadata and the status subresource."""
        assert request.resource is not None
        try:
            if request.method.value == 'PUT' and isinstance(body, dict):
                new = copy.deepcopy(body)
            elif request.method.value == 'PUT':
                raise api_error(400, 'the body of the request must be an object')
            elif ctype == APPLY:
                self._check_apply(request, body)
                obj_key: ObjKey = (request.resource, request.namespace, str(request.name))
                owner = (obj_key, request.params.get('fieldManager', ''))
                previous = self._applied.get(owner)
                base = _drop_unapplied(live, previous, body) if previous is not None else live
                new = dict(dicts.merge_patch_dict(base, body))
                self._applied[owner] = copy.deepcopy(body)
            elif ctype == JSON_PATCH and isinstance(body, list):
                new = dict(dicts.json_patch_dict(live, body))
            elif ctype in MERGE_TYPES and isinstance(body, dict):
                new = dict(dicts.merge_patch_dict(live, body))
            elif ctype in MERGE_TYPES | {JSON_PATCH}:
                raise api_error(400, f'the body does not fit the content type {ctype}')
            else:
                raise api_error(415, f'the content type {ctype!r} is not supported here')
        except kmock.KubernetesError:
            raise
        except Exception as e:  # a failed JSON-patch "test", a bad pointer, a dict patched by a scalar, ...
            raise api_error(422, f'the patch cannot be applied: {e!r}') from e
        new = copy.deepcopy(new)
        if self._has_status(request.resource):
            source, new = (new, copy.deepcopy(live)) if request.subresource == 'status' else (live, new)
            new.pop('status', None)
            if 'status' in source:
                new['status'] = copy.deepcopy(source['status'])
        if not isinstance(new.get('metadata', {}), dict):
            raise api_error(422, 'metadata must be an object')
        meta, live_meta = new.setdefault('metadata', {}), live.get('metadata', {})
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'resourceVersion',
                      'deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
            if field in live_meta:
                meta[field] = live_meta[field]
        return new

    async def _delete(self, request: kmock.Request, key: ObjKey, live: JsonDict) -> JsonDict:
        meta = live.get('metadata', {})
        if meta.get('deletionTimestamp'):
            return live
        if meta.get('finalizers'):
            return await self._mark_deleting(key)
        options = request.data if isinstance(request.data, dict) else {}
        orphan = options.get('propagationPolicy', request.params.get('propagationPolicy')) == 'Orphan'
        return await self._remove(key, collect=not orphan)

    async def _store(self, key: ObjKey, obj: JsonDict, event: str) -> None:
        async with self._lock:
            if key in self.objects:
                self.objects[key].history.append(copy.deepcopy(obj))
            else:
                self.objects[key] = copy.deepcopy(obj)
            await self._buses[key[0]].put({'type': event, 'object': copy.deepcopy(obj)})

    async def _mark_deleting(self, key: ObjKey) -> JsonDict:
        obj = copy.deepcopy(self.objects[key].raw)
        obj['metadata'].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0,
                               resourceVersion=self._next_rv())
        await self._store(key, obj, 'MODIFIED')
        return obj

    async def _remove(self, key: ObjKey, collect: bool = True) -> JsonDict:
        async with self._lock:
            obj = copy.deepcopy(self.objects[key].raw)
            self.objects[key].delete()
            obj['metadata']['resourceVersion'] = self._next_rv()
            await self._buses[key[0]].put({'type': 'DELETED', 'object': copy.deepcopy(obj)})
        if collect and (uid := obj['metadata'].get('uid')):
            task = asyncio.get_running_loop().create_task(self._collect(uid, key[1]))
            self._gc_tasks.add(task)
            task.add_done_callback(self._gc_tasks.discard)
        return obj

    async def _collect(self, owner_uid: str, owner_namespace: str | None) -> None:
        """The garbage collector: remove the dependents of a removed owner (background propagation)."""
        await asyncio.sleep(self.gc_delay)
        async with self._write_lock:
            uids = {o.raw['metadata'].get('uid') for o in self.objects.values() if not o.deleted}
            for key, obj in list(self.objects.items()):
                if obj.deleted or (owner_namespace is not None and key[1] not in {None, owner_namespace}):
                    continue
                dependent = copy.deepcopy(obj.raw)
                meta = dependent.setdefault('metadata', {})
                refs = meta.get('ownerReferences') or []
                if all(ref.get('uid') != owner_uid for ref in refs):
                    continue
                if any(ref.get('uid') in uids for ref in refs):  # other owners remain: drop the dangling ref
                    meta['ownerReferences'] = [ref for ref in refs if ref.get('uid') != owner_uid]
                    meta['resourceVersion'] = self._next_rv()
                    await self._store(key, dependent, 'MODIFIED')
                elif not meta.get('finalizers'):
                    await self._remove(key)
                elif not meta.get('deletionTimestamp'):
                    await self._mark_deleting(key)

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        return self._results.pop(request.id, None) or await super()._serve_create(request)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        return self._results.pop(request.id, None) or await super()._serve_update(request)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        return self._results.pop(request.id, None) or await super()._serve_delete(request)

    def _selected(self, request: kmock.Request, obj: Mapping[str, Any]) -> bool:
        labels = obj.get('metadata', {}).get('labels') or {}
        label_selector = request.params.get('labelSelector')
        field_selector = request.params.get('fieldSelector')
        return ((not label_selector or matches_selector(label_selector, labels.get)) and
                (not field_selector or matches_selector(field_selector, lambda path: _field(obj, path))))

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        result = await super()._serve_list(request)
        assert isinstance(result, dict)
        assert request.resource is not None
        group, version, info = request.resource.group, request.resource.version, self._info(request.resource)
        kind = info.kind if info and info.kind else str(request.resource.plural).capitalize()
        return {'apiVersion': f'{group}/{version}' if group else version, 'kind': f'{kind}List',
                'metadata': {'resourceVersion': str(self._rv)},
                'items': [item for item in result['items'] if self._selected(request, item)]}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        # Like a real server, a watch from a resourceVersion (e.g. the one of a preceding list) does not replay
        # objects the client has already seen; kmock replays every stored object as ADDED.
        since = request.params.get('resourceVersion', '')
        floor = int(since) if since.isdigit() and since != '0' else None
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict):
                yield event
                continue
            obj = event.get('object', {})
            rv = str(obj.get('metadata', {}).get('resourceVersion', ''))
            if floor is not None and rv.isdigit() and int(rv) <= floor:
                continue
            if self._selected(request, obj):
                yield event

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        result = await super()._serve_version(request)
        assert isinstance(result, dict)
        for entry in result['resources']:  # kmock copies the parent's shortNames etc. to subresources
            if '/' in entry['name']:
                entry.update(singularName='', shortNames=[], categories=[], verbs=['get', 'patch', 'update'])
        return result

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        address = f'{request.url.host}:{request.url.port}'
        return {'kind': 'APIVersions', 'versions': ['v1'],
                'serverAddressByClientCIDRs': [{'clientCIDR': '0.0.0.0/0', 'serverAddress': address}]}


class KubeApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f'HTTP {status}: {body!r}')
        self.status, self.body = status, body


@dataclasses.dataclass
class KubeApi:
    """The test-facing handle: the emulator, its URL, a request log and API helpers doing real HTTP."""
    emulator: KubeApiEmulator
    url: str
    session: aiohttp.ClientSession

    def fail_next(self, method: str, path_pattern: str, status: int, times: int = 1,
                  reason: str | None = None) -> Fault:
        return self.emulator.fail_next(method, path_pattern, status, times, reason)

    def assert_faults_consumed(self) -> None:
        """Every fault injected so far fired exactly the number of times asked: the requests the test meant to
        fail were made (same verb, a matching path) and got the error."""
        assert self.emulator.faults, 'no fault was injected'
        unconsumed = [fault.describe() for fault in self.emulator.faults if fault.left]
        assert not unconsumed, f'injected faults not consumed: {unconsumed}'

    def requests(self, since: int = 0) -> list[tuple[str, str, str]]:
        return [(r.method.value, r.url.path, r.url.query_string) for r in self.emulator.request_log[since:]]

    def writes(self, since: int = 0, *, include_events: bool = True) -> list[tuple[str, str, str]]:
        return [r for r in self.requests(since) if r[0] in WRITES
                and (include_events or '/events' not in r[1])]

    def mark(self) -> int:
        return len(self.emulator.request_log)

    async def _call(self, method: str, path: str, *, ok404: bool = False, **kwargs: Any) -> JsonDict | None:
        async with self.session.request(method, self.url + path, **kwargs) as response:
            body = await response.json(content_type=None)
            if response.status == 404 and ok404:
                return None
            if response.status >= 400:
                raise KubeApiError(response.status, body)
            assert isinstance(body, dict)
            return body

    async def get(self, resource_path: str, **params: str) -> JsonDict | None:
        """The object (or the list for a collection path), or ``None`` if it does not exist."""
        return await self._call('GET', resource_path, ok404=True, params=params)

    async def create(self, resource_path: str, body: JsonDict) -> JsonDict:
        """POST to the collection; an object path whose last segment is the object's name also works."""
        name = body.get('metadata', {}).get('name')
        if name and resource_path.rstrip('/').endswith(f'/{name}'):
            resource_path = resource_path.rstrip('/').rsplit('/', 1)[0]
        return await self._call('POST', resource_path, json=body) or {}

    async def patch(self, resource_path: str, body: JsonDict | list[JsonDict],
                    content_type: str | None = None) -> JsonDict:
        """A merge patch for dicts, a JSON patch for lists (or the given content type)."""
        ctype = content_type or (JSON_PATCH if isinstance(body, list) else 'application/merge-patch+json')
        return await self._call('PATCH', resource_path, data=json.dumps(body),
                                headers={'Content-Type': ctype}) or {}

    async def apply(self, resource_path: str, body: JsonDict, field_manager: str = 'tests',
                    force: bool = True) -> JsonDict:
        params = {'fieldManager': field_manager, **({'force': 'true'} if force else {})}
        return await self._call('PATCH', resource_path, data=json.dumps(body), params=params,
                                headers={'Content-Type': APPLY}) or {}

    async def delete(self, resource_path: str, propagation_policy: str | None = None) -> JsonDict | None:
        """The deleted (or deletion-marked) object, or ``None`` if it did not exist."""
        options = {'propagationPolicy': propagation_policy} if propagation_policy else None
        return await self._call('DELETE', resource_path, ok404=True, json=options)

    async def wait_for(self, resource_path: str, predicate: Callable[[JsonDict | None], bool],
                       within: float = 30.0) -> JsonDict | None:
        """Poll the object until the predicate holds for it (``None`` if absent); fail after ``within`` s."""
        deadline = time.monotonic() + within
        while not predicate(obj := await self.get(resource_path)):
            if time.monotonic() > deadline:
                raise TimeoutError(f'{resource_path} did not reach the expected state: {obj!r}')
            await asyncio.sleep(0.02)
        return obj


@contextlib.asynccontextmanager
async def run_kube_api(**emulator_kwargs: Any) -> AsyncIterator[KubeApi]:
    """Run the emulator on a free loopback port for the duration of the context."""
    async with (KubeApiEmulator(**emulator_kwargs) as emulator, kmock.Server(emulator) as server,
                aiohttp.ClientSession() as session):
        yield KubeApi(emulator=emulator, url=f'http://{server.host}:{server.port}', session=session)
