import asyncio
import logging
import kopf
from tests.support.kubeapi import KubeApi

pytest_plugins = ['tests.support.kube_fixture']
DGP = '/apis/digest.dev/v1alpha1/namespaces/ns/digestpipelines'


async def test_kopf_against_emulator(kube_api: KubeApi, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_):
        return kopf.ConnectionInfo(server=kube_api.url, default_namespace='ns')

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_):
        settings.peering.name = 'default'
        settings.peering.mandatory = True
        settings.watching.server_timeout = 10
        settings.posting.level = logging.DEBUG

    @kopf.on.resume('digest.dev', 'v1alpha1', 'digestpipelines', registry=registry)
    @kopf.on.create('digest.dev', 'v1alpha1', 'digestpipelines', registry=registry)
    @kopf.on.update('digest.dev', 'v1alpha1', 'digestpipelines', registry=registry)
    async def reconcile(body, patch, logger, **_):
        logger.info('reconciling')
        owner = {'apiVersion': body['apiVersion'], 'kind': body['kind'], 'name': body['metadata']['name'], 'uid': body['metadata']['uid'], 'controller': True}
        await kube_api.apply('/apis/apps/v1/namespaces/ns/deployments/' + body['metadata']['name'],
            {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': body['metadata']['name'], 'ownerReferences': [owner]},
             'spec': {'replicas': body['spec']['replicas']}})
        patch.status['observedGeneration'] = body['metadata']['generation']

    await kube_api.create('/apis/kopf.dev/v1/namespaces/ns/kopfpeerings', {'metadata': {'name': 'default'}})
    stop = asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, namespaces=['ns'], stop_flag=stop, clusterwide=False))
    await kube_api.create(DGP, {'metadata': {'name': 'p', 'finalizers': []}, 'spec': {'replicas': 1}})
    await kube_api.wait_for(f'{DGP}/p', lambda o: bool(o and o.get('status', {}).get('observedGeneration') == 1))
    await kube_api.patch(f'{DGP}/p', {'spec': {'replicas': 2}})
    obj = await kube_api.wait_for(f'{DGP}/p', lambda o: bool(o and o.get('status', {}).get('observedGeneration') == 2))
    dep = await kube_api.get('/apis/apps/v1/namespaces/ns/deployments/p')
    assert dep['spec']['replicas'] == 2
    mark = kube_api.mark()
    await asyncio.sleep(1.5)
    print('STEADY', kube_api.writes(mark))
    assert kube_api.writes(mark, include_events=False) == []
    await kube_api.delete(f'{DGP}/p')
    await kube_api.wait_for(f'{DGP}/p', lambda o: o is None)
    await kube_api.wait_for('/apis/apps/v1/namespaces/ns/deployments/p', lambda o: o is None)
    events = await kube_api.get('/api/v1/namespaces/ns/events')
    print('EVENTS', len(events['items']))
    stop.set()
    await asyncio.wait_for(task, 10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    for r in caplog.records:
        if r.levelno >= logging.WARNING: print('LOG', r.levelname, r.getMessage()[:200])
    assert not errors
