"""How the real kube-apiserver answers requests the operator's client must understand, above all a kind it does not
serve (a CRD not installed): `404 page not found` in plain text, not a Status object. The e2e tier's emulator
(`tests.support.kubeapi`, `unserved_groups`) answers the same way; this pins it to the real server."""

from __future__ import annotations

import asyncio
import uuid

import kopf
import pytest

from digest_operator.k8s import ApiError, KubeClient
from tests.support.controlplane import ControlPlane

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker


def admin_client(plane: ControlPlane) -> KubeClient:
    """Our client as the cluster admin: authorized for everything, so that only routing decides the answer (the
    operator's ServiceAccount is authorized for keda.sh whether KEDA is installed or not)."""
    info = kopf.ConnectionInfo(server=plane.server, ca_path=str(plane.ca_file),
                               certificate_path=str(plane.admin_cert), private_key_path=str(plane.admin_key))
    return KubeClient(lambda: info, field_manager="controlplane-tests")


async def apply(plane: ControlPlane, api_version: str, kind: str, plural: str, namespace: str) -> ApiError:
    client = admin_client(plane)
    try:
        with pytest.raises(ApiError) as info:
            await client.apply({"apiVersion": api_version, "kind": kind,
                                "metadata": {"name": "demo", "namespace": namespace}}, plural)
        return info.value
    finally:
        await client.close()


@pytest.mark.parametrize(("api_version", "kind", "plural"), [
    ("widgets.example.com/v1", "Widget", "widgets"),  # a group that is not installed at all
    ("keda.sh/v1alpha9", "ScaledObject", "scaledobjects"),  # an installed group, a version it does not serve
    ("keda.sh/v1alpha1", "ScaledWidget", "scaledwidgets"),  # an installed group version, a kind it has no CRD for
])
def test_a_kind_the_server_does_not_serve_is_a_plain_text_404(
        control_plane: ControlPlane, namespace: str, api_version: str, kind: str, plural: str) -> None:
    path = f"/apis/{api_version}/namespaces/{namespace}/{plural}/demo"
    status, body = control_plane.request("GET", path)
    assert (status, body) == (404, {"message": "404 page not found\n"})  # not JSON (see ControlPlane.request)
    error = asyncio.run(apply(control_plane, api_version, kind, plural, namespace))
    assert (error.status, error.reason, error.message, error.not_served) == (404, "NotFound", "404 page not found",
                                                                               True)


def test_a_missing_namespace_is_a_status_object_not_a_missing_kind(control_plane: ControlPlane) -> None:
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    error = asyncio.run(apply(control_plane, "keda.sh/v1alpha1", "TriggerAuthentication", "triggerauthentications",
                              gone))
    assert (error.status, error.reason, error.not_served) == (404, "NotFound", False)
    assert gone in error.message
