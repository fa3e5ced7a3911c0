"""The per-pipeline NetworkPolicy: whom it selects, the ports it opens, spec.networkPolicy, and pruning."""

from __future__ import annotations

from typing import Any

import pytest

from digest_api.parse import SpecError, parse_pipeline
from digest_operator.reconcile import reconcile
from digest_operator.render import render_children
from tests.support.samples import load, minimal, with_path
from tests.support.schemas import assert_valid
from tests.unit.operator.test_reconcile import NOW, UID, MemoryApi

EXTRA = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}],
         "ports": [{"port": 6432}, {"port": 7000, "endPort": 7010}]}


def _render(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pipeline = parse_pipeline(with_path(body, "metadata.uid", UID))
    return {obj["kind"]: obj for obj in render_children(pipeline, pipeline.image)}


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and the In operator the policy uses)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _ports(rules: list[dict[str, Any]]) -> set[tuple[str, Any]]:
    return {(p["protocol"], p["port"]) for rule in rules for p in rule["ports"]}


def test_it_selects_exactly_the_pipelines_worker_and_monitor_pods() -> None:
    objects = _render(load())
    selector = objects["NetworkPolicy"]["spec"]["podSelector"]
    worker = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    monitor = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert _matches(selector, worker) and _matches(selector, monitor)
    other = _render(with_path(load(), "metadata.name", "other"))
    assert not _matches(selector, other["Deployment"]["spec"]["template"]["metadata"]["labels"])
    assert not _matches(other["NetworkPolicy"]["spec"]["podSelector"], worker)


def test_ingress_only_to_metrics_egress_only_to_the_services_it_needs() -> None:
    body = with_path(minimal(), "spec.worker", {"metricsPort": 9100})
    policy = _render(body)["NetworkPolicy"]
    assert_valid(policy)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9100}]}]
    assert _ports(spec["egress"]) == {("UDP", 53), ("TCP", 53), ("TCP", 5671), ("TCP", 443)}
    assert all("to" not in rule for rule in spec["egress"])  # Azure has no fixed addresses: ports, not peers


def test_a_database_opens_postgresql_and_spec_rules_are_added() -> None:
    body = with_path(minimal(), "spec.database", {"urlSecretRef": {"name": "db", "key": "url"}})
    body = with_path(body, "spec.networkPolicy", {"egress": [EXTRA]})
    policy = _render(body)["NetworkPolicy"]
    assert_valid(policy)
    egress = policy["spec"]["egress"]
    assert ("TCP", 5432) in _ports(egress)
    assert egress[-1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}],
                          "ports": [{"protocol": "TCP", "port": 6432},
                                    {"protocol": "TCP", "port": 7000, "endPort": 7010}]}


@pytest.mark.parametrize(("value", "reported", "fragment"), [
    ({"egress": [{"to": [], "ports": [{"port": 1}]}]}, "spec.networkPolicy.egress[0].to", "at least 1"),
    ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/8"}}], "ports": [{"port": 1}]}]},
     "spec.networkPolicy.egress[0].to[0].ipBlock.cidr", "CIDR"),
    ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}], "ports": [{"port": 1}]}]},
     "spec.networkPolicy.egress[0].to[0]", "either ipBlock"),
    ({"egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 70000}]}]},
     "spec.networkPolicy.egress[0].ports[0].port", "65535"),
    ({"egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "db", "endPort": 9}]}]},
     "spec.networkPolicy.egress[0].ports[0]", "endPort"),
    ({"enable": False}, "spec.networkPolicy.enable", "not permitted"),
])
def test_bad_network_policy_specs_name_the_field(value: dict[str, Any], reported: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_pipeline(with_path(minimal(), "spec.networkPolicy", value))
    problems = dict(info.value.problems)
    assert any(path.startswith(reported) and fragment in text for path, text in problems.items()), problems


async def test_turning_it_off_prunes_it() -> None:
    api = MemoryApi()
    body = minimal()
    body["metadata"].update(uid=UID, generation=1)
    first = await reconcile(body, api, NOW)
    assert ("apply", "NetworkPolicy", "demo-worker") in api.writes
    api.writes.clear()
    off = with_path({**body, "status": first.status}, "spec.networkPolicy", {"enabled": False})
    await reconcile(off, api, NOW)
    assert api.writes == [("delete", "networkpolicies", "demo-worker")]
