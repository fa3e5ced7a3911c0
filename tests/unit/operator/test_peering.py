"""The operator's own peering object: which one it applies at start-up, and how a failure is retried."""

from __future__ import annotations

import asyncio
import datetime
import socket
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references
from kopf._core.engines import peering as kopf_peering

from digest_operator.k8s import ApiError, response_error
from digest_operator.peering import PeeringGate, ensure_peering, own_identity, paused, peering_object
from tests.unit.operator.test_cache import FAST, HANG, FakeClient


def settings(*, name: str = "digest-operator", standalone: bool = False, mandatory: bool = True,
             clusterwide: bool = True) -> kopf.OperatorSettings:
    """As kopf.spawn_tasks leaves them for `--peering NAME` (mandatory), `--standalone`, or `-n NS` watching."""
    result = kopf.OperatorSettings()
    result.peering.name, result.peering.standalone = name, standalone
    result.peering.mandatory, result.peering.clusterwide = mandatory, clusterwide
    return result


def test_mandatory_cluster_peering_is_the_named_cluster_kopf_peering() -> None:
    assert peering_object(settings(name="digest")) == {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "digest"}}


@pytest.mark.parametrize("case", [
    settings(standalone=True, mandatory=False),  # --standalone
    settings(mandatory=False),  # Kopf's auto-detection: creating the object would switch peering on
    settings(clusterwide=False),  # namespace-bound peering uses KopfPeering objects, not shipped
], ids=["standalone", "optional", "namespaced"])
def test_nothing_is_created_without_mandatory_cluster_peering(case: kopf.OperatorSettings) -> None:
    assert peering_object(case) is None


class Api:
    def __init__(self, error: ApiError | None = None) -> None:
        self.error = error
        self.applied: list[tuple[dict[str, Any], str]] = []

    async def apply(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        self.applied.append((obj, plural))
        if self.error is not None:
            raise self.error
        return obj


async def test_ensure_applies_the_object_to_its_collection() -> None:
    api = Api()
    await ensure_peering(api, settings(), retry_delay=15)
    assert api.applied == [({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                             "metadata": {"name": "digest-operator"}}, "clusterkopfpeerings")]


async def test_standalone_applies_nothing() -> None:
    api = Api()
    assert await ensure_peering(api, settings(standalone=True, mandatory=False), retry_delay=15) is None
    assert api.applied == []


@pytest.mark.parametrize(("error", "says"), [
    (response_error(404, b"404 page not found\n"),
     "the API server does not serve kopf.dev/v1 ClusterKopfPeering: is the CRD clusterkopfpeerings.kopf.dev "
     "(manifests/peering) installed?"),
    (ApiError(403, "Forbidden", "cannot create"),
     "needs create and patch on clusterkopfpeerings named 'digest-operator' (manifests/rbac/role.yaml)"),
    (ApiError(503, "ServiceUnavailable", "later"), "503 ServiceUnavailable: later"),
])
async def test_failures_are_retried_by_kopf_with_what_to_do(error: ApiError, says: str) -> None:
    with pytest.raises(kopf.TemporaryError) as info:
        await ensure_peering(Api(error), settings(), retry_delay=15)
    assert info.value.delay == 15
    assert "cannot apply the ClusterKopfPeering 'digest-operator'" in str(info.value)
    assert says in str(info.value)


# --- whether Kopf's peering lets a replica act --------------------------------------------------------------------

ME, PRIORITY = "me", 100


def seen(seconds_ago: float) -> str:
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)).isoformat()


PEER_CASES: dict[str, dict[str, Any]] = {
    "nobody": {},
    "only me": {ME: {"priority": PRIORITY, "lifetime": 60, "lastseen": seen(1)}},
    "a higher live peer": {"other": {"priority": PRIORITY + 1, "lifetime": 60, "lastseen": seen(1)}},
    "a higher dead peer": {"other": {"priority": PRIORITY + 1, "lifetime": 60, "lastseen": seen(120)}},
    "an equal live peer": {"other": {"priority": PRIORITY, "lifetime": 60, "lastseen": seen(1)}},
    "a lower live peer": {"other": {"priority": PRIORITY - 1, "lifetime": 60, "lastseen": seen(1)}},
    "a higher peer never seen": {"other": {"priority": PRIORITY + 5, "lifetime": 60}},
    "a higher peer, a naive time": {"other": {"priority": PRIORITY + 5, "lifetime": 60,
                                              "lastseen": datetime.datetime.now(datetime.UTC)
                                              .replace(tzinfo=None).isoformat()}},
    "lower live and higher dead": {
        "low": {"priority": 1, "lifetime": 60, "lastseen": seen(1)},
        "high": {"priority": PRIORITY * 2, "lifetime": 5, "lastseen": seen(10)},
    },
}


async def kopf_pauses(status: dict[str, Any]) -> bool:
    """The oracle: Kopf's own handling of a peering event, into the toggle it pauses the operator with (Kopf's
    internals, imported by this test only)."""
    conflicts = aiotoggles.Toggle(False)
    pressure = asyncio.Event()
    pressure.set()  # do not wait for the blocking peers' deadlines
    peering_settings = settings()
    peering_settings.peering.priority = PRIORITY
    await kopf_peering.process_peering_event(
        raw_event={"type": "MODIFIED", "object": {"metadata": {"name": "digest-operator"}, "status": status}},
        namespace=None, resource=RESOURCE,
        identity=kopf_peering.Identity(ME), settings=peering_settings, autoclean=False, stream_pressure=pressure,
        conflicts_found=conflicts)
    return conflicts.is_on()


RESOURCE = references.Resource(group="kopf.dev", version="v1", plural="clusterkopfpeerings", namespaced=False)


@pytest.mark.parametrize("case", list(PEER_CASES))
async def test_paused_agrees_with_kopf(case: str) -> None:
    status = PEER_CASES[case]
    assert paused(status, ME, PRIORITY, datetime.datetime.now(datetime.UTC)) == await kopf_pauses(status)


def test_paused_until_a_higher_peer_dies() -> None:
    now = datetime.datetime.now(datetime.UTC)
    status = {"other": {"priority": PRIORITY + 1, "lifetime": 30, "lastseen": now.isoformat()}}
    assert paused(status, ME, PRIORITY, now + datetime.timedelta(seconds=29))
    assert not paused(status, ME, PRIORITY, now + datetime.timedelta(seconds=30))


async def test_the_gate_opens_on_the_listed_object_and_follows_its_status() -> None:
    client = FakeClient()
    def at(version: str, status: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                "metadata": {"name": "digest-operator", "resourceVersion": version}, "status": status}

    higher = {"other": {"priority": PRIORITY + 1, "lifetime": 60, "lastseen": seen(0)}}
    client.lists.append(([at("5", {})], "5"))
    client.watches.append([{"type": "MODIFIED", "object": at("6", higher)}, HANG])
    changes: list[None] = []
    gate = PeeringGate(client, "digest-operator", ME, PRIORITY, FAST, on_change=lambda: changes.append(None))
    assert not gate()  # nothing listed yet: paused, as Kopf's mandatory peering starts
    gate.start()
    try:
        deadline = asyncio.get_running_loop().time() + 2
        while not changes:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert not gate()  # a higher live peer announced itself
        assert client.calls[0] == ("list", "clusterkopfpeerings", "")
    finally:
        await gate.close()


async def test_the_gate_is_open_with_no_conflicting_peer_and_closed_without_the_object() -> None:
    client = FakeClient()
    obj = {"metadata": {"name": "digest-operator", "resourceVersion": "5"},
           "status": {ME: {"priority": PRIORITY, "lifetime": 60, "lastseen": seen(0)}}}
    client.lists.append(([obj], "5"))
    gate = PeeringGate(client, "digest-operator", ME, PRIORITY, FAST, on_change=lambda: None)
    gate.start()
    try:
        await asyncio.wait_for(gate.informer.synced.wait(), 2)
        assert gate()
    finally:
        await gate.close()
    other = FakeClient()
    other.lists.append(([{**obj, "metadata": {"name": "someone-else", "resourceVersion": "5"}}], "5"))
    missing = PeeringGate(other, "digest-operator", ME, PRIORITY, FAST, on_change=lambda: None)
    missing.start()
    try:
        await asyncio.wait_for(missing.informer.synced.wait(), 2)
        assert not missing()
    finally:
        await missing.close()


def test_own_identity_has_kopfs_form_and_pod_id_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_ID", raising=False)
    user_host, started, suffix = own_identity().split("/")
    assert user_host.split("@", 1)[1] == socket.gethostname()  # in a pod: the pod's name
    assert len(started) == 14 and started.isdigit() and suffix
    assert own_identity() != own_identity()
    monkeypatch.setenv("POD_ID", "digest-operator-abc")
    assert own_identity() == "digest-operator-abc"
