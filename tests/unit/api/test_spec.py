"""Spec validation: good inputs parse with documented defaults; bad inputs name the field path."""

from __future__ import annotations

from typing import Any

import pytest

from digest_api.imageref import parse_image
from digest_api.parse import SpecError, parse_pipeline
from tests.support.samples import DIGEST, load, minimal, sample_files, with_path


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_sample_is_valid(path: Any) -> None:
    import yaml

    pipeline = parse_pipeline(yaml.safe_load(path.read_text()))
    assert pipeline.image.pinned


def test_defaults_are_the_documented_ones() -> None:
    spec = parse_pipeline(minimal()).spec
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas, spec.scaling.messages_per_replica) == (0, 10, 5)
    scaling = spec.scaling
    assert (scaling.activation_messages, scaling.polling_interval, scaling.cooldown_period) == (0, 30, 300)
    assert spec.service_bus.max_delivery_count == 10
    assert spec.dead_letter.alert_after == "5m"
    assert spec.dead_letter.monitor.schedule == "*/5 * * * *"
    assert spec.teams.app_type == "UserAssignedMSI"
    assert spec.rollout.max_surge == "25%" and spec.rollout.max_unavailable == 0
    assert spec.worker.resources.requests == {"cpu": "100m", "memory": "128Mi"}


def test_full_sample_keeps_its_values() -> None:
    spec = parse_pipeline(load()).spec
    assert spec.worker.prefetch == 4
    assert [r.name for r in spec.dead_letter.requeue_policy.rules] == ["transient", "broker-retries", "poison"]
    assert spec.database.url_secret_ref is not None and spec.database.url_secret_ref.key == "url"


BAD: list[tuple[str, Any, str, str]] = [
    ("spec.image", "not an image!", "spec.image", "image reference"),
    ("spec.image", "repo@sha256:123", "spec.image", "image reference"),
    ("spec.serviceBus.namespace", "no_dots", "spec.serviceBus.namespace", "fully qualified"),
    ("spec.serviceBus.queue", "-bad", "spec.serviceBus.queue", "entity name"),
    ("spec.serviceBus.maxDeliveryCount", 0, "spec.serviceBus.maxDeliveryCount", "greater than or equal to 1"),
    ("spec.serviceBus.auth", {}, "spec.serviceBus.auth", "exactly one"),
    ("spec.serviceBus.auth", {
        "workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555"},
        "connectionStringSecretRef": {"name": "s", "key": "k"},
    }, "spec.serviceBus.auth", "exactly one"),
    ("spec.serviceBus.auth.workloadIdentity", {"clientId": "nope"}, "spec.serviceBus.auth.workloadIdentity.clientId",
     "GUID"),
    ("spec.scaling", {"minReplicas": 5, "maxReplicas": 2}, "spec.scaling", "minReplicas (5) must be less"),
    ("spec.scaling.maxReplicas", 0, "spec.scaling.maxReplicas", "greater than or equal to 1"),
    ("spec.scaling.messagesPerReplica", "five", "spec.scaling.messagesPerReplica", "integer"),
    ("spec.worker.concurrency", 0, "spec.worker.concurrency", "greater than or equal to 1"),
    ("spec.worker.env", [{"name": "DIGEST_QUEUE", "value": "x"}], "spec.worker.env[0]", "reserved"),
    ("spec.worker.env", [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "a"}}}],
     "spec.worker.env[0]", "not both"),
    ("spec.worker.resources", {"requests": {"cpu": "lots"}}, "spec.worker.resources.requests.cpu", "quantity"),
    ("spec.worker.tolerations", [{"operator": "Maybe"}], "spec.worker.tolerations[0].operator", "Exists"),
    ("spec.teams", {"appId": "11111111-2222-3333-4444-555555555555", "appType": "SingleTenant",
                    "tenantId": "11111111-2222-3333-4444-555555555555"}, "spec.teams", "passwordSecretRef is required"),
    ("spec.teams", {"appId": "11111111-2222-3333-4444-555555555555", "tenantId": "11111111-2222-3333-4444-555555555555",
                    "passwordSecretRef": {"name": "a", "key": "b"}}, "spec.teams", "not allowed"),
    ("spec.teams", {"appId": "11111111-2222-3333-4444-555555555555"}, "spec.teams", "tenantId is required"),
    ("spec.teams.appType", "Anonymous", "spec.teams.appType", "UserAssignedMSI"),
    ("spec.teams.loginUrl", "http://login.example/tenant", "spec.teams.loginUrl", "must match ^https://"),
    ("spec.teams.oauthScope", "api.botframework.com", "spec.teams.oauthScope", "must match ^https://"),
    ("spec.deadLetter.alertAfter", "five minutes", "spec.deadLetter.alertAfter", "duration"),
    ("spec.deadLetter.monitor.schedule", "every hour", "spec.deadLetter.monitor.schedule", "cron"),
    ("spec.deadLetter.requeuePolicy.rules", [{"name": "p", "action": "Park"}], "spec.deadLetter.requeuePolicy",
     "parkQueue is required"),
    ("spec.deadLetter.requeuePolicy.rules", [{"name": "a", "action": "Skip"}, {"name": "a", "action": "Skip"}],
     "spec.deadLetter.requeuePolicy", "unique"),
    ("spec.deadLetter.requeuePolicy.rules", [{"name": "r", "action": "Requeue", "match": {"description": "(["}}],
     "spec.deadLetter.requeuePolicy.rules[0].match.description", "regular expression"),
    ("spec.deadLetter.requeuePolicy.rules", [{"name": "r", "action": "Retry"}],
     "spec.deadLetter.requeuePolicy.rules[0].action", "Requeue"),
    ("spec.rollout", {"maxSurge": 0, "maxUnavailable": "0%"}, "spec.rollout", "both be zero"),
    ("spec.rollout.maxSurge", "lots", "spec.rollout.maxSurge", "percentage"),
    ("spec.scalling", {}, "spec.scalling", "Extra inputs"),
    ("spec.deadLetter.alertAfter", "30s5m", "spec.deadLetter.alertAfter", "descending order"),
    ("spec.worker.env", [{"name": "A", "valueFrom": {}}], "spec.worker.env[0].valueFrom", "exactly one"),
    ("spec.worker.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}], "spec.worker.tolerations[0]",
     "value must be empty"),
    ("spec.worker.tolerations", [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}],
     "spec.worker.tolerations[0]", "only allowed with effect NoExecute"),
    ("spec.worker.nodeSelector", {"bad key!": "x"}, "spec.worker.nodeSelector", "not a valid label key"),
    ("spec.monitoring.labels", {"release": "not valid!"}, "spec.monitoring.labels", "not a valid label value"),
    ("spec.worker.resources", {"limits": {"gpus": 1}}, "spec.worker.resources.limits", "not a resource name"),
    ("spec.worker.resources", {"limits": {"cpu": "-1"}}, "spec.worker.resources.limits.cpu", "quantity"),
    ("spec.rollout", {"maxUnavailable": "150%"}, "spec.rollout", "more than 100%"),
    ("metadata.name", "x" * 64, "metadata.name", "at most 63"),
    ("metadata.name", "Upper", "metadata.name", "DNS label"),
]


@pytest.mark.parametrize(("path", "value", "reported", "fragment"), BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD])
def test_invalid_specs_name_the_field(path: str, value: Any, reported: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_pipeline(with_path(minimal(), path, value))
    problems = dict(info.value.problems)
    assert reported in problems, info.value.problems
    assert fragment in problems[reported]


def test_numeric_strings_become_integers_for_int_or_percent_fields() -> None:
    body = with_path(minimal(), "spec.rollout", {"maxSurge": "1", "maxUnavailable": "0"})
    rollout = parse_pipeline(body).spec.rollout
    assert (rollout.max_surge, rollout.max_unavailable) == (1, 0)


def test_every_problem_is_reported_at_once() -> None:
    body = with_path(with_path(minimal(), "spec.image", "Bad"), "spec.scaling.maxReplicas", 0)
    del body["spec"]["teams"]
    with pytest.raises(SpecError) as info:
        parse_pipeline(body)
    assert {p for p, _ in info.value.problems} == {"spec.image", "spec.scaling.maxReplicas", "spec.teams"}


def test_missing_spec_is_an_error() -> None:
    with pytest.raises(SpecError, match="spec: is required"):
        parse_pipeline({"metadata": {"name": "x"}})


@pytest.mark.parametrize(
    ("reference", "name", "tag", "pinned", "short"),
    [
        (f"repo@{DIGEST}", "repo", None, True, "repo@" + "ab" * 6),
        (f"localhost:5000/a/b:1.2@{DIGEST}", "localhost:5000/a/b", "1.2", True, "b@" + "ab" * 6),
        ("contoso.azurecr.io/team/worker:latest", "contoso.azurecr.io/team/worker", "latest", False, "worker:latest"),
        ("worker", "worker", None, False, "worker:latest"),
    ],
)
def test_image_references(reference: str, name: str, tag: str | None, pinned: bool, short: str) -> None:
    image = parse_image(reference)
    assert (image.name, image.tag, image.pinned, image.short) == (name, tag, pinned, short)
    assert str(image) == reference


def test_tag_only_image_is_syntactically_valid_but_not_pinned() -> None:
    pipeline = parse_pipeline(with_path(minimal(), "spec.image", "contoso.azurecr.io/worker:latest"))
    assert not pipeline.image.pinned
