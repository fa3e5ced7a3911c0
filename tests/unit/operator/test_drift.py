"""Drift detection and merge patches."""

from __future__ import annotations

from decimal import Decimal

import pytest

from digest_operator.drift import contains, in_sync, merge_patch, quantity_value


def test_server_defaults_and_foreign_fields_are_not_drift() -> None:
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}},
               "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}}}
    live = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1", "other": "x"}, "uid": "u", "resourceVersion": "9"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "w", "image": "i", "terminationMessagePath": "/dev/termination-log"}]}}},
            "status": {"replicas": 3}}
    assert in_sync(desired, live)


@pytest.mark.parametrize("mutate", [
    lambda live: live["spec"]["template"]["spec"]["containers"][0].update(image="other"),
    lambda live: live["metadata"]["labels"].pop("a"),
    lambda live: live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"}),
    lambda live: live["spec"].pop("template"),
])
def test_changed_owned_fields_are_drift(mutate: object) -> None:
    desired = {"metadata": {"name": "d", "labels": {"a": "1"}},
               "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}}}
    live = {"metadata": {"name": "d", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}}}
    assert in_sync(desired, live)
    mutate(live)  # type: ignore[operator]
    assert not in_sync(desired, live)


def test_quantities_compare_by_value_only_where_they_are_quantities() -> None:
    assert contains({"resources": {"limits": {"cpu": "1000m", "memory": "1Gi"}}},
                    {"resources": {"limits": {"cpu": "1", "memory": "1024Mi"}}})
    assert not contains({"resources": {"limits": {"cpu": "500m"}}}, {"resources": {"limits": {"cpu": "1"}}})
    assert not contains({"env": [{"value": "1000m"}]}, {"env": [{"value": "1"}]})
    assert not contains({"a": 1}, {"a": "1"})
    assert not contains({"a": True}, {"a": 1})


def test_quantity_values() -> None:
    assert quantity_value("128Mi") == Decimal(128 * 2**20)
    assert quantity_value("0.5") == quantity_value("500m")
    assert quantity_value("lots") is None


def test_merge_patch() -> None:
    old = {"a": 1, "b": {"c": 1, "d": 2}, "e": [1], "gone": True}
    new = {"a": 1, "b": {"c": 2, "d": 2}, "e": [1, 2], "f": None}
    assert merge_patch(old, new) == {"gone": None, "b": {"c": 2}, "e": [1, 2], "f": None}
    assert merge_patch(new, new) == {}
