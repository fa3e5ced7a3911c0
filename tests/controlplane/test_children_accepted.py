"""Issue 7, points 2 and 3: KEDA's and the Prometheus Operator's CRDs install on the real apiserver, every object
the operator renders is accepted by it (server-side dry-run, then a real server-side apply, strict field validation),
and the installation `kubectl apply --server-side --dry-run=server -k manifests/` is accepted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from digest_api.parse import parse_pipeline
from digest_operator.drift import quantity_value
from digest_operator.k8s import resource_path
from digest_operator.render import possible_children, render_children
from tests.controlplane.conftest import CRDS
from tests.support.controlplane import ControlPlane
from tests.support.samples import sample_files

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker

ROOT = Path(__file__).resolve().parents[2]
APPLY = "application/apply-patch+yaml"


def test_reference_crds_are_established(control_plane: ControlPlane) -> None:
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in CRDS]
    assert {"scaledobjects.keda.sh", "triggerauthentications.keda.sh", "podmonitors.monitoring.coreos.com",
            "prometheusrules.monitoring.coreos.com"} <= set(names)
    for name in names:
        crd = control_plane.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        assert crd is not None, name
        established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
        assert established and established[0]["status"] == "True", name


def create_pipeline(plane: ControlPlane, sample: Path, namespace: str) -> dict[str, Any]:
    body = yaml.safe_load(sample.read_text())
    body["metadata"]["namespace"] = namespace
    status, created = plane.request("POST", f"/apis/digest.dev/v1alpha1/namespaces/{namespace}/digestpipelines",
                                    body)
    assert status == 201, created
    return created


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.name)
def test_every_rendered_child_is_accepted(control_plane: ControlPlane, namespace: str, sample: Path) -> None:
    # a real owner, so that garbage collection keeps the children while the test looks at them
    pipeline = parse_pipeline(create_pipeline(control_plane, sample, namespace))
    children = render_children(pipeline, pipeline.image)
    plurals = {ref.kind: ref.plural for ref in possible_children(pipeline.name)}
    kinds = [child["kind"] for child in children]
    assert {"Deployment", "ScaledObject", "TriggerAuthentication", "CronJob", "ConfigMap"} <= set(kinds)
    if pipeline.spec.monitoring.enabled:
        assert {"PodMonitor", "PrometheusRule"} <= set(kinds)
    for child in children:
        meta = child["metadata"]
        path = resource_path(child["apiVersion"], plurals[child["kind"]], meta["namespace"], meta["name"])
        label = f"{child['kind']}/{meta['name']}"
        params = "fieldManager=digest-operator&force=true&fieldValidation=Strict"
        status, dry = control_plane.request("PATCH", path, child, content_type=APPLY, params=params + "&dryRun=All")
        assert status == 201, (label, dry)
        assert control_plane.get(path) is None, f"{label}: a dry run must not persist"
        status, applied = control_plane.request("PATCH", path, child, content_type=APPLY, params=params)
        assert status == 201, (label, applied)
        # nothing we sent was dropped or pruned by the schema (structural pruning would lose unknown fields)
        assert _contains(applied, copy.deepcopy(child)), label


def _contains(big: Any, small: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    if big != small:
        # the apiserver canonicalises quantities (e.g. 1000m -> 1); compare those by value
        return quantity_value(big) is not None and quantity_value(big) == quantity_value(small)
    return True


def test_installation_kustomization_server_side_dry_run(control_plane: ControlPlane) -> None:
    # A server-side dry run creates nothing, so on an empty cluster the namespaced objects would be refused with
    # `namespaces "digest-system" not found` (the Namespace in the same apply is only dry-run too). Create the
    # namespace for real first, as `kubectl create namespace` before a dry run would.
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    result = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(ROOT / "manifests"))
    # the namespace enforces Pod Security "restricted": the operator's own Deployment passes it without warnings
    assert "PodSecurity" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.endswith("serverside-applied (server dry run)") for line in lines), result.stdout
    applied = {line.split()[0] for line in lines}
    assert {"namespace/digest-system", "serviceaccount/digest-operator", "clusterrole.rbac.authorization.k8s.io/"
            "digest-operator", "deployment.apps/digest-operator",
            "customresourcedefinition.apiextensions.k8s.io/digestpipelines.digest.dev"} <= applied, applied
    # a dry run persists nothing
    assert control_plane.get("/apis/apps/v1/namespaces/digest-system/deployments/digest-operator") is None
