"""Validate objects against the upstream schemas: strict Kubernetes schemas (kubernetes-validate, v1.33 = the
reference copy in shared/reference), and the openAPIV3Schema of CRDs (KEDA, Prometheus Operator, our own).

CRD schemas are made strict for the check (unknown fields rejected, like `kubectl apply --validate=strict`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "reference"
PROMETHEUS = REFERENCE / "prometheus-operator"
KUBERNETES_VERSION = "1.33"

CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): REFERENCE / "keda" / "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): REFERENCE / "keda" / "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): PROMETHEUS / "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS / "monitoring.coreos.com_prometheusrules.yaml",
    ("digest.dev/v1alpha1", "DigestPipeline"): ROOT / "crds" / "digestpipelines.digest.dev.yaml",
}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    return validator_from_crd(yaml.safe_load(CRD_FILES[(api_version, kind)].read_text()), api_version)


def validator_from_crd(crd: dict[str, Any], api_version: str) -> jsonschema.protocols.Validator:
    version = api_version.rsplit("/", 1)[-1]
    entry = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(entry["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server's ObjectMeta, not by the CRD schema
    schema["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return jsonschema.Draft7Validator(schema)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of `obj` (empty when valid)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_FILES:
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(*key).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc).splitlines()[0]]
    return []


def assert_valid(obj: dict[str, Any]) -> None:
    errors = schema_errors(obj)
    assert not errors, f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: {errors}"


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural-schema defaulting as the API server does it: missing properties with a `default` are set,
    then defaulting recurses into every present value (including the defaulted ones)."""
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for name, sub in schema["properties"].items():
            if name not in result and "default" in sub:
                result[name] = json.loads(json.dumps(sub["default"]))
            if name in result:
                result[name] = apply_defaults(sub, result[name])
        return result
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: apply_defaults(schema["additionalProperties"], v) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value
