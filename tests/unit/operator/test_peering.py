"""The operator's own peering object: which one it applies at start-up, and how a failure is retried."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from digest_operator.k8s import ApiError, response_error
from digest_operator.peering import ensure_peering, peering_object


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
