"""Issue 7, point 1: our CRD on a real kube-apiserver: it installs, every sample is accepted, invalid pipelines are
rejected with the apiserver's own messages (OpenAPI types, enums, required fields, unknown fields, CEL rules), and
`kubectl get dgp` prints our printer columns."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml

from tests.controlplane.conftest import ROOT
from tests.support.controlplane import ControlPlane
from tests.support.samples import load, minimal, sample_files, with_path

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group("controlplane")]  # one control plane, one worker

K8S_VERSION = re.search(r"^K8S_VERSION=(\S+)", (ROOT / "cluster" / "digest_cluster" / "build.sh").read_text(),
                        re.M)[1]  # type: ignore[index]
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/digestpipelines.digest.dev"


def dgp_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/digest.dev/v1alpha1/namespaces/{namespace}/digestpipelines"
    return path if name is None else f"{path}/{name}"


def in_namespace(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    return body


def test_crd_is_established_and_served(control_plane: ControlPlane) -> None:
    crd = control_plane.get(CRD)
    assert crd is not None
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["dgp"]
    resources = control_plane.kubectl("api-resources", "--api-group=digest.dev", "-o", "wide").stdout
    (row,) = [line for line in resources.splitlines() if line.startswith("digestpipelines")]
    assert row.split()[:5] == ["digestpipelines", "dgp", "digest.dev/v1alpha1", "true", "DigestPipeline"]
    # re-applying the generated CRD is accepted and changes nothing
    before = crd["metadata"]["resourceVersion"]
    control_plane.kubectl("apply", "--server-side", "--field-manager=controlplane-tests", "-f",
                          str(ROOT / "crds" / "digestpipelines.digest.dev.yaml"))
    after = control_plane.get(CRD)
    assert after is not None and after["metadata"]["resourceVersion"] == before


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.name)
def test_every_sample_is_accepted(control_plane: ControlPlane, namespace: str, sample: Any) -> None:
    body = in_namespace(yaml.safe_load(sample.read_text()), namespace)
    status, created = control_plane.request("POST", dgp_path(namespace), body, params="fieldValidation=Strict")
    assert status == 201, created
    # the apiserver applied the schema defaults (e.g. scaling), and kept every field we sent
    assert created["spec"]["scaling"]["maxReplicas"] >= created["spec"]["scaling"]["minReplicas"]
    for key, value in body["spec"].items():
        if isinstance(value, dict):
            assert value.items() <= created["spec"][key].items() or _contains(created["spec"][key], value), key
        else:
            assert created["spec"][key] == value, key


def _contains(big: Any, small: Any) -> bool:
    """`small` is `big` with some defaulted fields left out."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    return bool(big == small)


INVALID = [
    pytest.param("spec.scaling.maxReplicas", "ten",
                 ['spec.scaling.maxReplicas: Invalid value: "string": spec.scaling.maxReplicas in body must be of '
                  'type integer: "string"'], id="type"),
    pytest.param("spec.teams.appType", "Bogus",
                 ['spec.teams.appType: Unsupported value: "Bogus": supported values: '], id="enum"),
    pytest.param("spec.scaling.maxReplicas", -1,
                 ["spec.scaling.maxReplicas: Invalid value: -1: spec.scaling.maxReplicas in body should be greater "
                  "than or equal to "], id="minimum"),
    pytest.param("spec.scaling", {"minReplicas": 5, "maxReplicas": 2},
                 ["spec.scaling.minReplicas: Invalid value: minReplicas must be less than or equal to maxReplicas"],
                 id="cel-min-max"),
    pytest.param("spec.serviceBus.auth", {
        "workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"},
        "connectionStringSecretRef": {"name": "sb", "key": "cs"}},
                 ["spec.serviceBus.auth: Invalid value: set exactly one of workloadIdentity or "
                  "connectionStringSecretRef"], id="cel-auth-one-of"),
    pytest.param("spec.teams", {"appId": "11111111-2222-3333-4444-555555555555", "appType": "SingleTenant"},
                 ["passwordSecretRef is required for SingleTenant and MultiTenant and not allowed for UserAssignedMSI",
                  "tenantId is required for SingleTenant and UserAssignedMSI"], id="cel-teams"),
    pytest.param("metadata.name", "x" * 64,
                 ["metadata.name must be at most 63 characters (it is used as a label value)"], id="cel-name"),
    pytest.param("spec.bogus", True, ['strict decoding error: unknown field "spec.bogus"'], id="unknown-field"),
]


@pytest.mark.parametrize(("path", "value", "messages"), INVALID)
def test_invalid_pipelines_are_rejected_with_the_apiservers_messages(
        control_plane: ControlPlane, namespace: str, path: str, value: Any, messages: list[str]) -> None:
    body = with_path(minimal(namespace=namespace), path, value)
    status, answer = control_plane.request("POST", dgp_path(namespace), body, params="fieldValidation=Strict")
    expected = (400, "BadRequest") if "bogus" in path else (422, "Invalid")
    assert (status, answer["reason"]) == expected, answer
    for message in messages:
        assert message in answer["message"], answer["message"]
    assert control_plane.get(dgp_path(namespace, body["metadata"]["name"])) is None


def test_required_field_missing_is_named(control_plane: ControlPlane, namespace: str) -> None:
    body = minimal(namespace=namespace)
    del body["spec"]["image"]
    result = control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert 'spec.image: Required value' in result.stderr, result.stderr


def test_kubectl_get_prints_our_columns(control_plane: ControlPlane, namespace: str) -> None:
    sample = in_namespace(load("digest_v1alpha1_digestpipeline.yaml"), namespace)
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(sample))
    name = sample["metadata"]["name"]
    status = {
        "observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
        "image": {"short": "digest-worker@3f2a9c0e5b7d"}, "deadLetter": {"count": 7},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }
    code, answer = control_plane.request("PATCH", dgp_path(namespace, name) + "/status", {"status": status},
                                         content_type="application/merge-patch+json")
    assert code == 200, answer
    table = control_plane.kubectl("get", "dgp", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "IMAGE", "REPLICAS", "DEAD-LETTER", "AGE"]
    assert table[1].split()[:5] == [name, "True", "digest-worker@3f2a9c0e5b7d", "2", "7"]
    wide = control_plane.kubectl("get", "dgp", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "IMAGE", "REPLICAS", "DEAD-LETTER", "AGE", "QUEUE", "REASON"]
    assert wide[1].split()[-2:] == ["digest-requests", "Available"]


def test_versions_are_stamped(control_plane: ControlPlane) -> None:
    """The module-built apiserver reports its release (unstamped builds say `v0.0.0-master+$Format:%H$`, which
    kubectl's version skew check cannot parse), and kubectl is within one minor version of it."""
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    server, client = versions["serverVersion"], versions["clientVersion"]
    assert server["gitVersion"] == f"v{K8S_VERSION}" and server["major"] == "1"
    assert abs(int(client["minor"]) - int(server["minor"])) <= 1, (client, server)
    assert "warning" not in control_plane.kubectl("version").stderr.lower()
