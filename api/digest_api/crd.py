"""Generate the DigestPipeline CustomResourceDefinition from the Pydantic models (`digestctl crd`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from digest_api import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, yamlio
from digest_api.parse import MAX_NAME_LENGTH
from digest_api.spec import DigestPipelineSpec
from digest_api.status import DigestPipelineStatus

CRD_PATH = Path("crds") / f"{PLURAL}.{GROUP}.yaml"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Summary condition"},
    {"name": "Image", "type": "string", "jsonPath": ".status.image.short",
     "description": "Worker image in use (short digest)"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas",
     "description": "Worker replicas (KEDA-scaled)"},
    {"name": "Dead-letter", "type": "integer", "jsonPath": ".status.deadLetter.count",
     "description": "Messages in the dead-letter queue at the last check"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Queue", "type": "string", "jsonPath": ".spec.serviceBus.queue", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
     "priority": 1},
]

def _clean_description(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Turn a Pydantic JSON schema node into an OpenAPI v3 structural schema node."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    any_of = node.get("anyOf")
    if any_of is not None:
        variants = [v for v in any_of if v != {"type": "null"}]
        if len(variants) < len(any_of):  # Optional[X]: X itself; absence is how Kubernetes says null
            node.pop("anyOf")
            if node.get("default", ...) is None:
                node.pop("default")
            if len(variants) == 1:
                inner = variants[0]
                if "$ref" in inner:
                    inner = {**defs[inner["$ref"].rsplit("/", 1)[-1]]}
                node = {**inner, **node}
            else:
                node["anyOf"] = variants
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "additionalProperties" and value is False):
            continue
        if key == "description":
            out[key] = _clean_description(value)
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _expand_validated_defaults(node: Any) -> None:
    """`default: {}` on an object with CEL rules becomes the object its fields' defaults make.

    kube-apiserver evaluates the rules against the default value itself, before nested defaulting: a rule such as
    `self.minReplicas <= self.maxReplicas` fails on `{}` with "no such key" and the CRD is rejected. The expanded
    default is what defaulting `{}` yields anyway, so objects are unchanged.
    """
    if isinstance(node, list):
        for item in node:
            _expand_validated_defaults(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _expand_validated_defaults(value)
    if node.get("default") == {} and "properties" in node and node.get("x-kubernetes-validations"):
        node["default"] = {name: sub["default"] for name, sub in node["properties"].items() if "default" in sub}


def model_schema(model: type[DigestPipelineSpec] | type[DigestPipelineStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _structural(raw, defs)
    _expand_validated_defaults(result)
    return result


def generate_crd() -> dict[str, Any]:
    """The CRD as a dict (deterministic)."""
    schema: dict[str, Any] = {
        "type": "object",
        "description": "A KEDA-scaled Azure Service Bus digest worker: Deployment, ScaledObject, "
                       "TriggerAuthentication, dead-letter monitor CronJob and monitoring, reconciled by the "
                       "digest operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(DigestPipelineSpec),
            "status": model_schema(DigestPipelineStatus),
        },
        "x-kubernetes-validations": [{
            "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters (it is used as a label value)",
        }],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "digest-pipelines"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "digest"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": schema},
            }],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `digestctl crd` from digest_api; do not edit by hand.\n"
    return header + yamlio.dump(generate_crd())
