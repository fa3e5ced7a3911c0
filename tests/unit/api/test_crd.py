"""The checked-in CRD is generated from the models, structural, strict-schema valid, and its CEL rules hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from click.testing import CliRunner

from digest_api.crd import CRD_PATH, crd_yaml, generate_crd
from digest_cli import main
from tests.support.samples import ROOT, minimal, sample_files, with_path
from tests.support.schemas import apply_defaults, assert_valid, schema_errors


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crd_matches_the_models() -> None:
    assert (ROOT / CRD_PATH).read_text() == crd_yaml(), "run: digestctl crd --write"


def test_crd_check_command_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("old\n")
    result = CliRunner().invoke(main, ["crd", "--check", str(stale)])
    assert result.exit_code == 3
    assert "out of date" in result.output
    fresh = tmp_path / "fresh.yaml"
    assert CliRunner().invoke(main, ["crd", "--write", str(fresh)]).exit_code == 0
    assert CliRunner().invoke(main, ["crd", "--check", str(fresh)]).exit_code == 0


def test_crd_is_valid_against_the_strict_apiextensions_schema() -> None:
    assert_valid(generate_crd())


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert "$ref" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "boolean", "number"}, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        if node.get("type") == "object" and "properties" in node:
            for name in node.get("required", []):
                assert name in node["properties"], path
        assert "default" not in node or node["default"] is not None, path


def test_every_spec_field_is_documented() -> None:
    spec = _schema()["properties"]["spec"]
    undocumented = [path for path, node in _walk(spec) if path and not node.get("description")
                     and not path.endswith(("{}", "[]"))]
    assert undocumented == []


def test_names_status_subresource_and_printer_columns() -> None:
    crd = generate_crd()
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["plural"], names["kind"], names["shortNames"]) == (
        "digest.dev", "digestpipelines", "DigestPipeline", ["dgp"])
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"] if not c.get("priority")}
    assert list(columns) == ["Ready", "Image", "Replicas", "Dead-letter", "Age"]
    assert columns["Image"]["jsonPath"] == ".status.image.short"
    assert columns["Dead-letter"]["jsonPath"] == ".status.deadLetter.count"
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "lastTransitionTime", "reason", "message"}


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_samples_validate_against_the_crd(path: Path) -> None:
    assert_valid(yaml.safe_load(path.read_text()))


def test_crd_schema_rejects_what_the_models_reject() -> None:
    assert schema_errors(with_path(minimal(), "spec.image", "Not An Image"))
    assert schema_errors(with_path(minimal(), "spec.scaling.maxReplicas", 0))
    assert schema_errors(with_path(minimal(), "spec.teams.appType", "Anonymous"))
    assert schema_errors(with_path(minimal(), "spec.scalling", {}))


# --- CEL rules: evaluated with a real CEL implementation against defaulted objects, as the API server does ---

def _rules() -> list[tuple[str, dict[str, Any]]]:
    return [(path, rule) for path, node in _walk(_schema()) for rule in node.get("x-kubernetes-validations", [])]


def _node_at(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in filter(None, path.split(".")):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _defaulted(body: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: with the CRD's own defaults (not the models')."""
    defaulted: dict[str, Any] = apply_defaults(_schema(), body)
    return defaulted


def _violations(body: dict[str, Any]) -> list[str]:
    failed = []
    for path, rule in _rules():
        node = _node_at(body, path)
        if node is not None and not cel.evaluate(rule["rule"], {"self": node}):  # a missing key raises: a bug
            failed.append(rule["message"])
    return failed


def test_cel_rules_exist_for_cross_field_constraints() -> None:
    rules = {path: rule["rule"] for path, rule in _rules()}
    assert "self.minReplicas <= self.maxReplicas" in rules[".spec.scaling"]
    assert ".spec.serviceBus.auth" in rules and ".spec.rollout" in rules and ".spec.teams" in rules
    assert ".spec.deadLetter.requeuePolicy" in rules and "" in rules


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_cel_rules_accept_the_samples(path: Path) -> None:
    assert _violations(_defaulted(yaml.safe_load(path.read_text()))) == []


def test_cel_rules_accept_a_minimal_pipeline_with_only_crd_defaults() -> None:
    # regression: a rule read `self.rules` on the defaulted `requeuePolicy: {}` and failed with "no such key"
    defaulted = _defaulted(minimal())
    assert defaulted["spec"]["deadLetter"]["requeuePolicy"] == {
        "maxMessagesPerRun": 500, "maxMessagesPerSecond": 50, "mode": "Active", "defaultAction": "Skip",
        "circuitBreaker": {"threshold": 10, "window": "15m"},
    }
    assert _violations(defaulted) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.scaling", {"minReplicas": 5, "maxReplicas": 2}, "minReplicas must be less than or equal to maxReplicas"),
        ("spec.serviceBus.auth", {}, "set exactly one of workloadIdentity or connectionStringSecretRef"),
        ("spec.rollout", {"maxSurge": 0, "maxUnavailable": "0%"}, "maxSurge and maxUnavailable must not both be zero"),
        ("spec.deadLetter.requeuePolicy", {"rules": [{"name": "p", "action": "Park"}]}, "parkQueue is required"),
        ("spec.deadLetter.requeuePolicy", {"defaultAction": "Park"}, "parkQueue is required"),
        ("spec.teams", {"appId": "x", "appType": "MultiTenant"}, "passwordSecretRef is required"),
        ("spec.teams", {"appId": "x", "appType": "SingleTenant", "passwordSecretRef": {}}, "tenantId is required"),
        ("metadata.name", "x" * 64, "metadata.name must be at most 63"),
    ],
)
def test_cel_rules_reject_invalid_objects(path: str, value: Any, message: str) -> None:
    body = with_path(_defaulted(minimal()), path, value)
    assert any(v.startswith(message) for v in _violations(body)), _violations(body)


def test_checked_in_spec_reference_matches_the_models() -> None:
    from digest_api.specdoc import DOC_PATH, spec_markdown

    text = (ROOT / DOC_PATH).read_text()
    assert text == spec_markdown(), "run: digestctl crd --docs --write docs/spec.md"
    assert "| `scaling.minReplicas` | integer |  | `0` |" in text
