"""Each behaviour of the project's kube-apiserver emulator, checked over raw HTTP (all fail on stock kmock 0.8)."""
import asyncio
import json
import re
import uuid
from typing import Any

import aiohttp
import kmock
import pytest

from tests.support.kubeapi import KubeApi, KubeApiError, run_kube_api

pytest_plugins = ['tests.support.kube_fixture']

NS = 'digest'
DGP = f'/apis/digest.dev/v1alpha1/namespaces/{NS}/digestpipelines'
DEPLOY = f'/apis/apps/v1/namespaces/{NS}/deployments'
CRONJOBS = f'/apis/batch/v1/namespaces/{NS}/cronjobs'
SCALEDOBJECTS = f'/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects'
SA = f'/api/v1/namespaces/{NS}/serviceaccounts'
EVENTS = f'/api/v1/namespaces/{NS}/events'
MERGE = 'application/merge-patch+json'
APPLY = 'application/apply-patch+yaml'


def pipeline(name: str = 'p1', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'digest.dev/v1alpha1', 'kind': 'DigestPipeline',
            'metadata': {'name': name}, 'spec': {'queue': 'q', 'replicas': 1, **spec}}


def deployment(name: str, owner: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    refs = [{'apiVersion': owner['apiVersion'], 'kind': owner['kind'], 'name': owner['metadata']['name'],
             'uid': owner['metadata']['uid'], 'controller': True}] if owner else []
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': {'name': name, 'ownerReferences': refs, **meta},
            'spec': {'replicas': 1, 'template': {'spec': {'containers': [{'name': 'c', 'image': 'i'}]}}}}


async def raw(api: KubeApi, method: str, path: str, body: Any = None, content_type: str | None = None,
              **params: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {'Content-Type': content_type} if content_type else {}
    data = None if body is None else json.dumps(body)
    async with api.session.request(method, api.url + path, data=data, headers=headers, params=params) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text.startswith(('{', '[')) else text), resp


def rv(obj: dict[str, Any]) -> int:
    return int(obj['metadata']['resourceVersion'])


# 1. Metadata like a real server.
async def test_create_adds_server_metadata(kube_api: KubeApi) -> None:
    first = await kube_api.create(DGP, pipeline('p1'))
    second = await kube_api.create(DGP, pipeline('p2'))
    meta = first['metadata']
    assert uuid.UUID(meta['uid']).version == 4
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', meta['creationTimestamp'])
    assert meta['generation'] == 1
    assert meta['namespace'] == NS
    assert rv(second) > rv(first)
    assert second['metadata']['uid'] != meta['uid']
    assert await kube_api.get(f'{DGP}/p1') == first


async def test_generate_name_becomes_a_name(kube_api: KubeApi) -> None:
    event = {'metadata': {'generateName': 'kopf-event-'}, 'reason': 'Logging', 'message': 'hi',
             'involvedObject': {'kind': 'DigestPipeline', 'name': 'p1', 'namespace': NS}}
    names = {(await kube_api.create(EVENTS, event))['metadata']['name'] for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r'kopf-event-[a-z0-9]{5}', name) for name in names)


async def test_generation_and_resource_version_on_writes(kube_api: KubeApi) -> None:
    created = await kube_api.create(DGP, pipeline())
    labelled = await kube_api.patch(f'{DGP}/p1', {'metadata': {'labels': {'a': 'b'}}})
    assert (labelled['metadata']['generation'], rv(labelled) > rv(created)) == (1, True)
    respec = await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 3}})
    assert (respec['metadata']['generation'], rv(respec) > rv(labelled)) == (2, True)
    status = await kube_api.patch(f'{DGP}/p1/status', {'status': {'phase': 'Ready'}})
    assert (status['metadata']['generation'], rv(status) > rv(respec)) == (2, True)
    replaced = await kube_api.patch(f'{DGP}/p1', [{'op': 'replace', 'path': '/spec/queue', 'value': 'q2'}])
    assert replaced['metadata']['generation'] == 3
    # Server-owned fields cannot be overwritten by clients.
    forged = await kube_api.patch(f'{DGP}/p1', {'metadata': {'uid': 'forged', 'generation': 99}})
    assert forged['metadata']['uid'] == created['metadata']['uid']
    assert forged['metadata']['generation'] == 3


async def test_generation_for_kinds_without_spec(kube_api: KubeApi) -> None:
    cm_path = f'/api/v1/namespaces/{NS}/configmaps'
    await kube_api.create(cm_path, {'metadata': {'name': 'cm'}, 'data': {'k': 'v'}})
    changed = await kube_api.patch(f'{cm_path}/cm', {'data': {'k': 'v2'}})
    assert changed['metadata']['generation'] == 2
    labelled = await kube_api.patch(f'{cm_path}/cm', {'metadata': {'labels': {'x': 'y'}}})
    assert labelled['metadata']['generation'] == 2


async def test_noop_write_keeps_resource_version_and_stores_nothing(kube_api: KubeApi) -> None:
    created = await kube_api.create(DGP, pipeline())
    assert await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 1}}) == created
    assert await kube_api.patch(f'{DGP}/p1', {'status': {'ignored': True}}) == created  # main endpoint
    stored = kube_api.emulator.objects[kmock.resource('digest.dev/v1alpha1/digestpipelines'), NS, 'p1']
    assert len(stored.history) == 1  # hence no watch event either


async def test_stale_resource_version_is_a_conflict(kube_api: KubeApi) -> None:
    created = await kube_api.create(DGP, pipeline())
    await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 2}})
    with pytest.raises(KubeApiError) as err:
        await kube_api.patch(f'{DGP}/p1', {'metadata': {'resourceVersion': created['metadata']['resourceVersion']},
                                           'spec': {'replicas': 5}})
    assert (err.value.status, err.value.body['reason']) == (409, 'Conflict')
    assert (await kube_api.get(f'{DGP}/p1') or {})['spec']['replicas'] == 2


# 2. Create returns 201; a duplicate is 409 AlreadyExists.
async def test_create_is_201_and_duplicate_is_409(kube_api: KubeApi) -> None:
    status, _, _ = await raw(kube_api, 'POST', DGP, pipeline(), 'application/json')
    assert status == 201
    status, body, _ = await raw(kube_api, 'POST', DGP, pipeline(), 'application/json')
    assert (status, body['kind'], body['reason'], body['code']) == (409, 'Status', 'AlreadyExists', 409)
    status, body, _ = await raw(kube_api, 'POST', DGP, {'spec': {}}, 'application/json')
    assert (status, body['reason']) == (422, 'Invalid')


# 3. The status subresource is kept apart.
@pytest.mark.parametrize(('collection', 'body'), [
    (DGP, pipeline()),
    (DEPLOY, deployment('p1')),
    (CRONJOBS, {'metadata': {'name': 'p1'}, 'spec': {'schedule': '* * * * *'}}),
    (SCALEDOBJECTS, {'metadata': {'name': 'p1'}, 'spec': {'scaleTargetRef': {'name': 'p1'}}}),
])
async def test_status_subresource_is_separate(kube_api: KubeApi, collection: str, body: dict[str, Any]) -> None:
    created = await kube_api.create(collection, {**body, 'status': {'sneaky': True}})
    assert 'status' not in created
    main = await kube_api.patch(f'{collection}/p1', {'status': {'ignored': 1}, 'metadata': {'labels': {'a': 'b'}}})
    assert 'status' not in main
    assert main['metadata']['labels'] == {'a': 'b'}
    status = await kube_api.patch(f'{collection}/p1/status', {
        'status': {'observedGeneration': 1}, 'spec': {'hijacked': True}, 'metadata': {'labels': {'c': 'd'}}})
    assert status['status'] == {'observedGeneration': 1}
    assert status['spec'] == created['spec']
    assert status['metadata']['labels'] == {'a': 'b'}
    assert rv(status) > rv(main)
    fetched = await kube_api.get(f'{collection}/p1')
    assert fetched == status


async def test_status_of_resources_without_the_subresource_is_not_found(kube_api: KubeApi) -> None:
    await kube_api.create(SA, {'metadata': {'name': 'sa'}})
    with pytest.raises(KubeApiError) as err:
        await kube_api.patch(f'{SA}/sa/status', {'status': {'x': 1}})
    assert err.value.status == 404


# 4. Patch content types and server-side apply.
async def test_server_side_apply_creates_then_updates(kube_api: KubeApi) -> None:
    body = deployment('web', labels={'app': 'web'})
    status, created, _ = await raw(kube_api, 'PATCH', f'{DEPLOY}/web', body, APPLY, fieldManager='op', force='true')
    assert status == 201
    assert created['metadata']['generation'] == 1
    assert uuid.UUID(created['metadata']['uid'])
    update = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web', 'labels': {'tier': 'x'}},
              'spec': {'template': {'spec': {'containers': [{'name': 'c2', 'image': 'j'}]}}}}
    status, applied, _ = await raw(kube_api, 'PATCH', f'{DEPLOY}/web', update, APPLY, fieldManager='op')
    assert status == 200
    # the same manager stopped applying `app` and `replicas`: removed, as with real field ownership
    assert applied['metadata']['labels'] == {'tier': 'x'}
    assert 'replicas' not in applied['spec']
    assert applied['spec']['template']['spec']['containers'] == [{'name': 'c2', 'image': 'j'}]  # lists replaced
    assert applied['metadata']['generation'] == 2
    assert applied['metadata']['uid'] == created['metadata']['uid']
    status, again, _ = await raw(kube_api, 'PATCH', f'{DEPLOY}/web', update, APPLY, fieldManager='op')
    assert (status, rv(again)) == (200, rv(applied))  # re-applying the same config is a no-op


async def test_server_side_apply_needs_a_field_manager(kube_api: KubeApi) -> None:
    status, body, _ = await raw(kube_api, 'PATCH', f'{DEPLOY}/web', deployment('web'), APPLY)
    assert (status, body['reason']) == (422, 'Invalid')
    assert await kube_api.get(f'{DEPLOY}/web') is None


async def test_merge_strategic_and_json_patches(kube_api: KubeApi) -> None:
    await kube_api.create(DGP, pipeline(tags=['a', 'b']))
    strategic = await kube_api.patch(f'{DGP}/p1', {'spec': {'tags': ['c'], 'queue': None}},
                                     content_type='application/strategic-merge-patch+json')
    assert strategic['spec'] == {'replicas': 1, 'tags': ['c']}
    patched = await kube_api.patch(f'{DGP}/p1', [{'op': 'add', 'path': '/spec/tags/-', 'value': 'd'}])
    assert patched['spec']['tags'] == ['c', 'd']
    status, body, _ = await raw(kube_api, 'PATCH', f'{DGP}/p1',
                                [{'op': 'test', 'path': '/spec/replicas', 'value': 7},
                                 {'op': 'replace', 'path': '/spec/replicas', 'value': 8}],
                                'application/json-patch+json')
    assert (status, body['reason']) == (422, 'Invalid')
    assert await kube_api.get(f'{DGP}/p1') == patched
    status, _, _ = await raw(kube_api, 'PATCH', f'{DGP}/p1', {'spec': {}}, 'application/json')
    assert status == 415


async def test_put_replaces_but_keeps_server_fields_and_status(kube_api: KubeApi) -> None:
    created = await kube_api.create(DGP, pipeline(tags=['a']))
    await kube_api.patch(f'{DGP}/p1/status', {'status': {'phase': 'Ready'}})
    status, replaced, _ = await raw(kube_api, 'PUT', f'{DGP}/p1', {**pipeline(), 'status': {}}, 'application/json')
    assert status == 200
    assert replaced['spec'] == {'queue': 'q', 'replicas': 1}  # "tags" is gone: a replacement, not a merge
    assert replaced['status'] == {'phase': 'Ready'}
    assert replaced['metadata']['uid'] == created['metadata']['uid']
    assert replaced['metadata']['generation'] == 2


# 5. Garbage collection by ownerReferences.
async def test_owner_deletion_collects_dependents_recursively(kube_api: KubeApi) -> None:
    owner = await kube_api.create(DGP, pipeline())
    child = await kube_api.create(DEPLOY, deployment('child', owner))
    grandchild = {'metadata': {'name': 'grandchild', 'ownerReferences': [
        {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': 'child', 'uid': child['metadata']['uid']}]}}
    await kube_api.create(SA, grandchild)
    await kube_api.create(DEPLOY, deployment('unrelated'))
    other_ns = deployment('elsewhere', owner)
    await kube_api.create('/apis/apps/v1/namespaces/other/deployments', other_ns)

    await kube_api.delete(f'{DGP}/p1')
    await kube_api.wait_for(f'{DEPLOY}/child', lambda obj: obj is None)
    await kube_api.wait_for(f'{SA}/grandchild', lambda obj: obj is None)
    assert await kube_api.get(f'{DEPLOY}/unrelated') is not None
    assert await kube_api.get('/apis/apps/v1/namespaces/other/deployments/elsewhere') is not None
    # The collection happens in the background, not within the DELETE request.
    assert [w for w in kube_api.writes() if w[0] == 'DELETE'] == [('DELETE', f'{DGP}/p1', '')]


async def test_gc_respects_finalizers_of_dependents_and_owners(kube_api: KubeApi) -> None:
    owner = await kube_api.create(DGP, {**pipeline(), 'metadata': {'name': 'p1', 'finalizers': ['x/y']}})
    await kube_api.create(DEPLOY, deployment('child', owner, finalizers=['keep/me']))
    deleting = await kube_api.delete(f'{DGP}/p1')
    assert deleting is not None
    assert re.fullmatch(r'.+Z', deleting['metadata']['deletionTimestamp'])
    await asyncio.sleep(0.2)
    assert await kube_api.get(f'{DEPLOY}/child') is not None  # the owner still exists (finalizer)

    await kube_api.patch(f'{DGP}/p1', {'metadata': {'finalizers': None}})
    assert await kube_api.get(f'{DGP}/p1') is None
    child = await kube_api.wait_for(f'{DEPLOY}/child', lambda obj: bool(obj and obj['metadata'].get(
        'deletionTimestamp')))
    assert child is not None
    assert child['metadata']['finalizers'] == ['keep/me']
    await kube_api.patch(f'{DEPLOY}/child', {'metadata': {'finalizers': []}})
    assert await kube_api.get(f'{DEPLOY}/child') is None


async def test_gc_keeps_dependents_with_other_owners_and_orphans(kube_api: KubeApi) -> None:
    first = await kube_api.create(DGP, pipeline('p1'))
    second = await kube_api.create(DGP, pipeline('p2'))
    shared = deployment('shared', first)
    shared['metadata']['ownerReferences'] += deployment('x', second)['metadata']['ownerReferences']
    await kube_api.create(DEPLOY, shared)
    await kube_api.create(DEPLOY, deployment('orphan', second))

    await kube_api.delete(f'{DGP}/p1')
    kept = await kube_api.wait_for(f'{DEPLOY}/shared', lambda obj: bool(
        obj and len(obj['metadata']['ownerReferences']) == 1))
    assert kept is not None
    assert kept['metadata']['ownerReferences'][0]['uid'] == second['metadata']['uid']

    await kube_api.delete(f'{DGP}/p2', propagation_policy='Orphan')
    await asyncio.sleep(0.2)
    assert await kube_api.get(f'{DEPLOY}/orphan') is not None
    assert await kube_api.get(f'{DEPLOY}/shared') is not None


# 6. Lists: kind, apiVersion, resourceVersion, selectors.
async def test_lists_are_typed_and_filtered(kube_api: KubeApi) -> None:
    await kube_api.create(DEPLOY, deployment('a', labels={'app': 'digest', 'tier': 'worker'}))
    await kube_api.create(DEPLOY, deployment('b', labels={'app': 'digest'}))
    await kube_api.create(DEPLOY, deployment('c', labels={'app': 'other'}))
    listing = await kube_api.get(DEPLOY)
    assert listing is not None
    assert (listing['kind'], listing['apiVersion']) == ('DeploymentList', 'apps/v1')
    assert int(listing['metadata']['resourceVersion']) >= max(rv(item) for item in listing['items'])
    assert (await kube_api.get('/api/v1/namespaces/x/serviceaccounts') or {})['kind'] == 'ServiceAccountList'

    async def names(**params: str) -> list[str]:
        found = await kube_api.get(DEPLOY, **params)
        return sorted(item['metadata']['name'] for item in (found or {})['items'])

    assert await names(labelSelector='app=digest') == ['a', 'b']
    assert await names(labelSelector='app==digest,tier!=worker') == ['b']
    assert await names(labelSelector='tier') == ['a']
    assert await names(labelSelector='!tier') == ['b', 'c']
    assert await names(labelSelector='app in (other, nope)') == ['c']
    assert await names(labelSelector='app notin (digest)') == ['c']
    assert await names(fieldSelector='metadata.name=b') == ['b']


async def test_watch_honours_label_selector(kube_api: KubeApi) -> None:
    await kube_api.create(DEPLOY, deployment('old', labels={'app': 'digest'}))
    await kube_api.create(DEPLOY, deployment('skip', labels={'app': 'other'}))
    params = {'watch': 'true', 'labelSelector': 'app=digest'}
    async with kube_api.session.get(kube_api.url + DEPLOY, params=params) as resp:
        await kube_api.create(DEPLOY, deployment('skip2', labels={'app': 'other'}))
        await kube_api.create(DEPLOY, deployment('new', labels={'app': 'digest'}))
        events = [json.loads(await asyncio.wait_for(resp.content.readline(), 2)) for _ in range(2)]
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [('ADDED', 'old'), ('ADDED', 'new')]


# 7. Pre-commit fault injection.
async def test_fail_next_fails_before_commit(kube_api: KubeApi) -> None:
    await kube_api.create(DGP, pipeline())
    before = await kube_api.get(f'{DGP}/p1')
    fault = kube_api.fail_next('PATCH', r'/digestpipelines/p1$', 500, times=2)
    for fired in range(1, 3):
        status, body, _ = await raw(kube_api, 'PATCH', f'{DGP}/p1', {'spec': {'replicas': 9}}, MERGE)
        assert (status, body['kind'], body['apiVersion']) == (500, 'Status', 'v1')
        assert (body['status'], body['reason'], body['code']) == ('Failure', 'InternalError', 500)
        assert await kube_api.get(f'{DGP}/p1') == before  # nothing was stored
        assert (fault.fired, fault.left) == ([f'PATCH {DGP}/p1'] * fired, 2 - fired)
        if fired == 1:
            with pytest.raises(AssertionError, match='not consumed'):
                kube_api.assert_faults_consumed()
    status, _, _ = await raw(kube_api, 'PATCH', f'{DGP}/p1/status', {'status': {'a': 1}}, MERGE)
    assert status == 200  # the pattern did not match /status
    assert (await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 9}}))['spec']['replicas'] == 9
    assert len(fault.fired) == 2  # used up: it fires no more
    kube_api.assert_faults_consumed()


async def test_a_fault_no_request_matches_is_reported_unconsumed(kube_api: KubeApi) -> None:
    """A test whose fault pattern matches no request (a renamed path, another verb) must not pass silently."""
    await kube_api.create(DGP, pipeline())
    kube_api.fail_next('PATCH', r'/digestpipelines/p1$', 500)
    wrong_verb = kube_api.fail_next('PUT', r'/digestpipelines/p1$', 500)
    wrong_path = kube_api.fail_next('PATCH', r'/digestpipeline/p1$', 500)
    status, _, _ = await raw(kube_api, 'PATCH', f'{DGP}/p1', {'spec': {'replicas': 9}}, MERGE)
    assert status == 500
    assert (await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 9}}))['spec']['replicas'] == 9
    assert (wrong_verb.fired, wrong_path.fired) == ([], [])
    with pytest.raises(AssertionError) as info:
        kube_api.assert_faults_consumed()
    assert 'PUT /digestpipelines/p1$ -> 500 x1: fired 0' in str(info.value)
    assert 'PATCH /digestpipeline/p1$ -> 500 x1: fired 0' in str(info.value)
    with pytest.raises(AssertionError, match='fired 0'):
        wrong_path.assert_consumed()
    with pytest.raises(ValueError, match='at least 1'):
        kube_api.fail_next('GET', '/x', 500, times=0)


async def test_fail_next_429_has_retry_after_and_custom_reason(kube_api: KubeApi) -> None:
    kube_api.fail_next('post', '/deployments$', 429)
    kube_api.fail_next('POST', '/serviceaccounts$', 409, reason='AlreadyExists')
    status, body, resp = await raw(kube_api, 'POST', DEPLOY, deployment('d'), 'application/json')
    assert (status, body['reason'], resp.headers.get('Retry-After')) == (429, 'TooManyRequests', '1')
    assert await kube_api.get(f'{DEPLOY}/d') is None
    status, body, resp = await raw(kube_api, 'POST', SA, {'metadata': {'name': 's'}}, 'application/json')
    assert (status, body['reason'], 'Retry-After' in resp.headers) == (409, 'AlreadyExists', False)
    assert await kube_api.get(f'{SA}/s') is None
    await kube_api.create(DEPLOY, deployment('d'))  # the faults are used up
    kube_api.assert_faults_consumed()


# 8. The request log.
async def test_request_log_and_writes(kube_api: KubeApi) -> None:
    await kube_api.create(DGP, pipeline())
    mark = kube_api.mark()
    await kube_api.get(f'{DGP}/p1')
    await kube_api.get(DGP, labelSelector='a=b')
    await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 2}})
    await kube_api.create(EVENTS, {'metadata': {'generateName': 'e-'}, 'reason': 'R'})
    await kube_api.delete(f'{DGP}/p1')
    assert kube_api.requests()[0] == ('POST', DGP, '')
    assert kube_api.requests()[mark:mark + 2] == [('GET', f'{DGP}/p1', ''), ('GET', DGP, 'labelSelector=a%3Db')]
    assert kube_api.writes(mark) == [('PATCH', f'{DGP}/p1', ''), ('POST', EVENTS, ''), ('DELETE', f'{DGP}/p1', '')]
    assert kube_api.writes(mark, include_events=False) == [('PATCH', f'{DGP}/p1', ''), ('DELETE', f'{DGP}/p1', '')]
    assert kube_api.mark() == mark + 5


# 9. The handle reads and writes through HTTP.
async def test_handle_helpers_use_http(kube_api: KubeApi) -> None:
    assert re.fullmatch(r'http://127\.0\.0\.1:\d+', kube_api.url)
    assert await kube_api.get(f'{DGP}/absent') is None
    created = await kube_api.create(f'{DGP}/p1', pipeline())  # an object path works for create too
    assert (await kube_api.patch(f'{DGP}/p1', {'spec': {'replicas': 4}}))['spec']['replicas'] == 4
    deleted = await kube_api.delete(f'{DGP}/p1')
    assert deleted is not None
    assert deleted['metadata']['uid'] == created['metadata']['uid']
    assert await kube_api.delete(f'{DGP}/p1') is None
    with pytest.raises(KubeApiError) as err:
        await kube_api.patch(f'{DGP}/p1', {'spec': {}})
    assert err.value.status == 404
    assert [m for m, _, _ in kube_api.requests()] == ['GET', 'POST', 'PATCH', 'DELETE', 'DELETE', 'PATCH']


# 10. Discovery of the declared resources.
@pytest.mark.parametrize(('group_version', 'plural', 'kind', 'namespaced', 'short', 'status'), [
    ('apis/digest.dev/v1alpha1', 'digestpipelines', 'DigestPipeline', True, ['dgp'], True),
    ('apis/keda.sh/v1alpha1', 'scaledobjects', 'ScaledObject', True, ['so'], True),
    ('apis/keda.sh/v1alpha1', 'triggerauthentications', 'TriggerAuthentication', True, None, False),
    ('apis/monitoring.coreos.com/v1', 'podmonitors', 'PodMonitor', True, None, False),
    ('apis/monitoring.coreos.com/v1', 'prometheusrules', 'PrometheusRule', True, None, False),
    ('apis/kopf.dev/v1', 'kopfpeerings', 'KopfPeering', True, None, False),
    ('apis/kopf.dev/v1', 'clusterkopfpeerings', 'ClusterKopfPeering', False, None, False),
    ('apis/apps/v1', 'deployments', 'Deployment', True, None, True),
    ('apis/batch/v1', 'cronjobs', 'CronJob', True, None, True),
    ('apis/coordination.k8s.io/v1', 'leases', 'Lease', True, None, False),
    ('api/v1', 'serviceaccounts', 'ServiceAccount', True, None, False),
    ('api/v1', 'events', 'Event', True, None, False),
])
async def test_resources_are_discoverable(kube_api: KubeApi, group_version: str, plural: str, kind: str,
                                          namespaced: bool, short: list[str] | None, status: bool) -> None:
    listing = await kube_api.get(f'/{group_version}')
    assert listing is not None
    entries = {entry['name']: entry for entry in listing['resources']}
    assert (entries[plural]['kind'], entries[plural]['namespaced']) == (kind, namespaced)
    assert {'get', 'list', 'watch', 'create', 'patch', 'delete'} <= set(entries[plural]['verbs'])
    assert short is None or entries[plural]['shortNames'] == short
    assert (f'{plural}/status' in entries) == status
    assert not status or entries[f'{plural}/status']['shortNames'] == []
    groups = await kube_api.get('/apis')
    assert groups is not None
    assert group_version == 'api/v1' or group_version.split('/')[1] in {g['name'] for g in groups['groups']}


async def test_namespaces_are_served(kube_api: KubeApi) -> None:
    # kmock 0.8 answers 500 to /api/v1/namespaces (it cannot parse the path); Kopf lists and watches it.
    created = await kube_api.create('/api/v1/namespaces', {'metadata': {'name': NS}})
    assert (created['kind'], created['metadata']['generation']) == ('Namespace', 1)
    assert await kube_api.get(f'/api/v1/namespaces/{NS}') == created
    listing = await kube_api.get('/api/v1/namespaces')
    assert listing is not None
    assert (listing['kind'], [ns['metadata']['name'] for ns in listing['items']]) == ('NamespaceList', [NS])
    labelled = await kube_api.patch(f'/api/v1/namespaces/{NS}', {'metadata': {'labels': {'a': 'b'}}})
    assert labelled['metadata']['labels'] == {'a': 'b'}
    assert kube_api.requests()[-1] == ('PATCH', f'/api/v1/namespaces/{NS}', '')
    assert await kube_api.delete(f'/api/v1/namespaces/{NS}') is not None
    assert await kube_api.get(f'/api/v1/namespaces/{NS}') is None


async def test_kopf_peering_objects_work(kube_api: KubeApi) -> None:
    peering = {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfPeering', 'metadata': {'name': 'default'}, 'status': {}}
    await kube_api.create(f'/apis/kopf.dev/v1/namespaces/{NS}/kopfpeerings', peering)
    patched = await kube_api.patch(f'/apis/kopf.dev/v1/namespaces/{NS}/kopfpeerings/default',
                                   {'status': {'me': {'priority': 0}}})
    assert patched['status'] == {'me': {'priority': 0}}
    cluster = await kube_api.create('/apis/kopf.dev/v1/clusterkopfpeerings', {**peering, 'kind': 'ClusterKopfPeering'})
    assert 'namespace' not in cluster['metadata']
    assert await kube_api.get('/apis/kopf.dev/v1/clusterkopfpeerings/default') == cluster


async def test_unserved_groups_answer_like_the_apiservers_router() -> None:
    # kube-apiserver answers a path it does not serve (here: KEDA's CRDs are not installed) with a plain-text 404
    async with run_kube_api(unserved_groups=frozenset({'keda.sh'})) as kube_api:
        for method, path, body in [('GET', f'{SCALEDOBJECTS}/so', None), ('GET', '/apis/keda.sh/v1alpha1', None),
                                   ('POST', SCALEDOBJECTS, {'metadata': {'name': 'so'}}),
                                   ('PATCH', f'{SCALEDOBJECTS}/so', {'metadata': {'name': 'so'}})]:
            async with kube_api.session.request(method, kube_api.url + path, json=body) as response:
                assert (response.status, response.content_type, await response.text()) == (
                    404, 'text/plain', '404 page not found\n'), (method, path)
        groups = await kube_api.get('/apis')
        assert groups is not None
        assert 'keda.sh' not in {g['name'] for g in groups['groups']}
        assert 'apps' in {g['name'] for g in groups['groups']}
        await kube_api.create(DEPLOY, deployment('d'))  # other groups are served as usual


# 11. Trailing-slash discovery and health probes.
@pytest.mark.parametrize('path', ['/api', '/apis', '/version', '/api/v1'])
async def test_trailing_slash_discovery(kube_api: KubeApi, path: str) -> None:
    status, with_slash, _ = await raw(kube_api, 'GET', path + '/')
    assert status == 200
    assert with_slash == await kube_api.get(path)


async def test_api_versions_have_server_addresses(kube_api: KubeApi) -> None:
    api = await kube_api.get('/api/')
    assert api is not None
    assert api['serverAddressByClientCIDRs'][0]['clientCIDR'] == '0.0.0.0/0'


@pytest.mark.parametrize('path', ['/healthz', '/readyz', '/livez'])
async def test_health_probes(kube_api: KubeApi, path: str) -> None:
    status, body, _ = await raw(kube_api, 'GET', path)
    assert (status, body) == (200, 'ok')


async def test_watch_from_a_resource_version_does_not_replay_what_the_list_returned(kube_api: KubeApi) -> None:
    path = '/api/v1/namespaces/default/configmaps'
    await kube_api.create(path, {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'old'}})
    listing = await kube_api.get(path)
    assert listing is not None
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async with aiohttp.ClientSession() as session, session.get(kube_api.url + path, params={
            'watch': 'true', 'resourceVersion': listing['metadata']['resourceVersion']}) as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    seen.append((event['type'], event['object']['metadata']['name']))

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await kube_api.create(path, {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'new'}})
    await asyncio.sleep(0.2)
    task.cancel()
    assert seen == [('ADDED', 'new')]


async def test_apply_removes_fields_the_manager_no_longer_applies(kube_api: KubeApi) -> None:
    path = '/api/v1/namespaces/default/configmaps/applied'
    first = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'applied'}, 'data': {'a': '1', 'b': '2'}}
    await kube_api.apply(path, first, field_manager='one')
    await kube_api.patch(path, {'data': {'c': '3'}})  # another writer's field stays
    second = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'applied'}, 'data': {'a': '1'}}
    result = await kube_api.apply(path, second, field_manager='one')
    assert result['data'] == {'a': '1', 'c': '3'}
