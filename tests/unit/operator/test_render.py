"""Renderers: the fields that matter, schema validity against the upstream schemas, names within limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from digest_api import contract
from digest_api.imageref import parse_image
from digest_api.parse import parse_pipeline
from digest_operator.render import possible_children, render_children
from digest_operator.render.meta import APPLIED_HASH, child_name
from tests.support.samples import DIGEST, load, minimal, sample_files, with_path
from tests.support.schemas import assert_valid

UID = "0b6f3c9e-1111-2222-3333-444455556666"


def _render(body: dict[str, Any], *, uid: str | None = UID, image: str | None = "spec") -> dict[str, dict[str, Any]]:
    body = with_path(body, "metadata.uid", uid) if uid else body
    pipeline = parse_pipeline(body)
    ref = pipeline.image if image == "spec" else (parse_image(image) if image else None)
    return {obj["kind"]: obj for obj in render_children(pipeline, ref)}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_rendered_object_validates_against_upstream_schemas(path: Path) -> None:
    objects = _render(yaml.safe_load(path.read_text()))
    assert objects
    for obj in objects.values():
        assert_valid(obj)


def test_all_children_rendered_with_owner_and_labels() -> None:
    objects = _render(load())
    assert set(objects) == {"ServiceAccount", "ConfigMap", "TriggerAuthentication", "Deployment", "ScaledObject",
                            "CronJob", "PodMonitor", "PrometheusRule", "NetworkPolicy"}
    for obj in objects.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "digests"
        assert meta["ownerReferences"] == [{
            "apiVersion": "digest.dev/v1alpha1", "kind": "DigestPipeline", "name": "team-digest", "uid": UID,
            "controller": True, "blockOwnerDeletion": True,
        }]
        assert meta["labels"]["app.kubernetes.io/instance"] == "team-digest"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "digest-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "digest-pipelines"


def test_offline_render_without_uid_has_no_owner_references() -> None:
    for obj in _render(minimal(), uid=None).values():
        assert "ownerReferences" not in obj["metadata"]


def test_deployment_is_hardened_pinned_and_leaves_replicas_to_keda() -> None:
    deployment = _render(load())["Deployment"]
    spec = deployment["spec"]
    assert "replicas" not in spec
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no DIGEST_*_PORT from Services named digest-…
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert container["image"].endswith("@sha256:" + "3f2a9c0e5b7d41f8a6c2e9b0d4f7a1c3e5b8d0f2a4c6e8b0d2f4a6c8e0b2d4f6")
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    assert spec["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    assert spec["progressDeadlineSeconds"] == 600
    assert pod["terminationGracePeriodSeconds"] == 60
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_worker_env_is_wired_from_the_spec() -> None:
    container = _render(load())["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env[contract.SERVICEBUS_NAMESPACE] == "contoso-digests.servicebus.windows.net"
    assert env[contract.SERVICEBUS_QUEUE] == "digest-requests"
    assert env[contract.MAX_DELIVERY_COUNT] == "10"
    assert env[contract.CONCURRENCY] == "4" and env[contract.PREFETCH] == "4"
    assert env[contract.DRAIN_SECONDS] == "55"
    assert env[contract.TEAMS_APP_TYPE] == "UserAssignedMSI"
    assert contract.DATABASE_URL not in env and contract.SERVICEBUS_CONNECTION_STRING not in env
    assert contract.TEAMS_APP_PASSWORD not in env and contract.TEAMS_SERVICE_URLS not in env
    assert _secret_sources(_render(load())["Deployment"]["spec"]["template"]["spec"]) == {
        contract.DATABASE_URL: ("digest-db", "url")}


def _secret_sources(pod_spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Contract variable → (Secret, key) of the file its `_FILE` variable names, followed as the kubelet would
    project it: env path → the container's mount → the volume's source item. No secret is an env var."""
    (container,) = pod_spec["containers"]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    found: dict[str, tuple[str, str]] = {}
    for entry in container["env"]:
        assert "secretKeyRef" not in entry.get("valueFrom", {}), entry["name"]
        if entry["name"].removesuffix(contract.FILE_SUFFIX) not in contract.SECRET_VARIABLES:
            continue  # e.g. DIGEST_REQUEUE_POLICY_FILE: a ConfigMap
        directory, _, file_name = entry["value"].rpartition("/")
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
        assert mount["readOnly"] is True
        sources = volumes[mount["name"]]["projected"]["sources"]
        (match,) = [(s["secret"]["name"], item["key"]) for s in sources for item in s["secret"]["items"]
                    if item["path"] == file_name]
        found[entry["name"].removesuffix(contract.FILE_SUFFIX)] = match
    return found


def test_the_worker_reads_the_secret_files_the_pod_mounts() -> None:
    """The rendered pod and the worker's reading rule (digest_api.contract.secret) agree: with the Secrets
    projected where the mounts say, each secret variable resolves to its Secret's value."""
    objects = _render(yaml.safe_load((Path(__file__).parents[3] / "manifests/samples/"
                                      "digest_v1alpha1_digestpipeline_local.yaml").read_text()))
    stored = {("servicebus", "connectionString"): b"Endpoint=sb://x/;SharedAccessKey=k\n",
              ("teams-bot", "password"): b"p4ss"}
    pod_spec = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    files: dict[str, bytes] = {}
    for mount in container["volumeMounts"]:
        volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = stored[(source["secret"]["name"], item["key"])]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert contract.secret(environ, contract.SERVICEBUS_CONNECTION_STRING, files.__getitem__) == \
        "Endpoint=sb://x/;SharedAccessKey=k"
    assert contract.secret(environ, contract.TEAMS_APP_PASSWORD, files.__getitem__) == "p4ss"
    assert contract.secret(environ, contract.DATABASE_URL, files.__getitem__) is None


def test_connection_string_auth_and_password_come_from_secrets() -> None:
    objects = _render(yaml.safe_load((Path(__file__).parents[3] / "manifests/samples/"
                                      "digest_v1alpha1_digestpipeline_local.yaml").read_text()))
    assert _secret_sources(objects["Deployment"]["spec"]["template"]["spec"]) == {
        contract.SERVICEBUS_CONNECTION_STRING: ("servicebus", "connectionString"),
        contract.TEAMS_APP_PASSWORD: ("teams-bot", "password")}
    monitor = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert _secret_sources(monitor) == {contract.SERVICEBUS_CONNECTION_STRING: ("servicebus", "connectionString")}
    assert "azure.workload.identity/use" not in objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["TriggerAuthentication"]["spec"] == {
        "secretTargetRef": [{"parameter": "connection", "name": "servicebus", "key": "connectionString"}]}
    assert "PodMonitor" not in objects and "PrometheusRule" not in objects
    assert set(objects["ServiceAccount"]["metadata"]["annotations"]) == {APPLIED_HASH}


def test_teams_service_urls_reach_the_worker() -> None:
    body = with_path(minimal(), "spec.teams.serviceUrls", ["default", "http://10.0.0.5:3978"])
    env = _env(_render(body)["Deployment"]["spec"]["template"]["spec"]["containers"][0])
    assert env[contract.TEAMS_SERVICE_URLS] == "default,http://10.0.0.5:3978"
    rules = contract.parse_service_urls(env[contract.TEAMS_SERVICE_URLS])
    assert contract.check_service_url("http://10.0.0.5:3978/v3/conversations", rules).allowed
    assert contract.check_service_url("https://smba.trafficmanager.net/amer/", rules).allowed


def test_workload_identity_service_account_and_trigger_auth() -> None:
    tenant = "99999999-8888-7777-6666-555555555555"
    body = with_path(minimal(), "spec.serviceBus.auth.workloadIdentity.tenantId", tenant)
    objects = _render(body)
    annotations = dict(objects["ServiceAccount"]["metadata"]["annotations"])
    assert annotations.pop(APPLIED_HASH)
    assert annotations == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
        "azure.workload.identity/tenant-id": "99999999-8888-7777-6666-555555555555",
    }
    assert objects["TriggerAuthentication"]["spec"] == {"podIdentity": {
        "provider": "azure-workload", "identityId": "11111111-2222-3333-4444-555555555555",
        "identityTenantId": "99999999-8888-7777-6666-555555555555"}}


def test_scaled_object_trigger() -> None:
    body = with_path(minimal(), "spec.scaling", {"minReplicas": 1, "maxReplicas": 7, "messagesPerReplica": 3,
                                                 "activationMessages": 2, "pollingInterval": 45, "cooldownPeriod": 60})
    so = _render(body)["ScaledObject"]["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-worker"}
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["pollingInterval"], so["cooldownPeriod"]) == (1, 7, 45, 60)
    (trigger,) = so["triggers"]
    assert trigger["type"] == "azure-servicebus"
    assert trigger["metadata"] == {"queueName": "digests", "namespace": "contoso", "cloud": "AzurePublicCloud",
                                   "messageCount": "3", "activationMessageCount": "2"}
    assert trigger["authenticationRef"] == {"name": "demo-servicebus", "kind": "TriggerAuthentication"}


@pytest.mark.parametrize(("fqdn", "expected"), [
    ("a.servicebus.chinacloudapi.cn", {"namespace": "a", "cloud": "AzureChinaCloud"}),
    ("a.servicebus.usgovcloudapi.net", {"namespace": "a", "cloud": "AzureUSGovernmentCloud"}),
    ("a.sb.example.internal", {"namespace": "a", "cloud": "Private", "endpointSuffix": "sb.example.internal"}),
])
def test_scaler_cloud_follows_the_namespace_suffix(fqdn: str, expected: dict[str, str]) -> None:
    trigger = _render(with_path(minimal(), "spec.serviceBus.namespace", fqdn))["ScaledObject"]["spec"]["triggers"][0]
    assert {k: v for k, v in trigger["metadata"].items() if k in ("namespace", "cloud", "endpointSuffix")} == expected


def test_dlq_monitor_cronjob_and_policy() -> None:
    objects = _render(load())
    cron = objects["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["schedule"] == "*/5 * * * *"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["dlq", "monitor", "--policy", "/etc/digest-pipelines/requeue-policy.json",
                                 "--termination-log", "/dev/termination-log", "--output", "json"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["image"] == objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["restartPolicy"] == "Never"
    assert pod["enableServiceLinks"] is False
    assert pod["volumes"][1] == {"name": "policy", "configMap": {"name": "team-digest-dlq-monitor"}}
    import json

    policy = json.loads(objects["ConfigMap"]["data"]["requeue-policy.json"])
    assert policy["queue"] == "digest-requests" and policy["maxDeliveryCount"] == 10
    assert [r["action"] for r in policy["requeuePolicy"]["rules"]] == ["Requeue", "Requeue", "Park"]
    assert policy["requeuePolicy"]["parkQueue"] == "digest-requests-parked"


def test_monitoring_objects() -> None:
    objects = _render(load())
    pm = objects["PodMonitor"]
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (rule,) = objects["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert rule["alert"] == "DigestPipelineDeadLetters" and rule["for"] == "5m"
    assert rule["expr"] == ('max(digest_pipeline_dead_letter_messages{pipeline_namespace="digests",'
                            'pipeline="team-digest"}) > 0')


def test_without_a_pinned_image_no_workload_is_rendered() -> None:
    body = with_path(minimal(), "spec.image", "registry.example.com/worker:latest")
    assert set(_render(body, image=None)) == {"ServiceAccount", "ConfigMap", "TriggerAuthentication", "PodMonitor",
                                              "PrometheusRule", "NetworkPolicy"}
    kept = _render(body, image=f"registry.example.com/worker@{DIGEST}")
    assert kept["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)


def test_service_account_override_is_used_and_not_created() -> None:
    objects = _render(with_path(minimal(), "spec.worker.serviceAccountName", "team-sa"))
    assert "ServiceAccount" not in objects
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "team-sa"
    assert objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == "team-sa"


def test_scheduling_and_extra_env() -> None:
    body = with_path(minimal(), "spec.worker", {
        "nodeSelector": {"pool": "workers"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "digests", "effect": "NoSchedule"}],
        "env": [{"name": "LOG_LEVEL", "value": "debug"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    })
    objects = _render(body)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "workers"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "digests", "effect": "NoSchedule"}]
    env = _env(pod["containers"][0])
    assert env["LOG_LEVEL"] == "debug" and env["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    for obj in objects.values():
        assert_valid(obj)


def test_long_names_stay_within_kubernetes_and_keda_limits() -> None:
    name = "a" * 63
    objects = _render(minimal(name=name))
    assert len(objects["ScaledObject"]["metadata"]["name"]) <= 54
    assert len("keda-hpa-" + objects["ScaledObject"]["metadata"]["name"]) <= 63
    assert len(objects["CronJob"]["metadata"]["name"]) <= 52
    for obj in objects.values():
        assert len(obj["metadata"]["name"]) <= 63
        assert_valid(obj)
    names = {child.name for child in possible_children(name)}
    assert {obj["metadata"]["name"] for obj in objects.values()} <= names


def test_child_name_is_deterministic_and_unique_per_base() -> None:
    assert child_name("short", "-x") == "short-x"
    long_a, long_b = "a" * 60 + "b", "a" * 60 + "c"
    assert child_name(long_a, "-worker") == child_name(long_a, "-worker")
    assert child_name(long_a, "-worker") != child_name(long_b, "-worker")
    assert len(child_name(long_a, "-worker")) == 63


def test_rendering_is_pure_and_deterministic() -> None:
    assert _render(load()) == _render(load())


def _empties(value: object, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found = [path] if not value and not path.endswith("emptyDir") else []
        for key, item in value.items():
            found += _empties(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [path] if not value else [p for i, item in enumerate(value) for p in _empties(item, f"{path}[{i}]")]
    return [path] if value == "" or value is None else []


def test_no_empty_values_are_rendered_as_the_server_would_drop_them() -> None:
    body = with_path(minimal(), "spec.worker", {
        "env": [{"name": "EMPTY", "value": ""}],
        "resources": {"requests": {}, "limits": {}},
        "tolerations": [{"operator": "Exists"}],
    })
    objects = _render(body)
    for obj in objects.values():
        assert _empties(obj) == [], obj["kind"]
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "EMPTY"} in container["env"]
    assert "resources" not in container
    assert objects["Deployment"]["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def test_applied_hash_changes_with_the_spec_only() -> None:
    first = _render(minimal())["Deployment"]["metadata"]["annotations"][APPLIED_HASH]
    assert _render(minimal())["Deployment"]["metadata"]["annotations"][APPLIED_HASH] == first
    other = _render(with_path(minimal(), "spec.worker.concurrency", 9))["Deployment"]["metadata"]["annotations"]
    assert other[APPLIED_HASH] != first


def test_teams_login_url_and_scope_reach_the_worker_only_when_set() -> None:
    document = yaml.safe_load((Path(__file__).parents[3] / "manifests/samples/"
                               "digest_v1alpha1_digestpipeline_local.yaml").read_text())
    env = _env(_render(document)["Deployment"]["spec"]["template"]["spec"]["containers"][0])
    assert contract.TEAMS_LOGIN_URL not in env and contract.TEAMS_OAUTH_SCOPE not in env
    document["spec"]["teams"] |= {"loginUrl": "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.us",
                                  "oauthScope": "https://api.botframework.us"}
    env = _env(_render(document)["Deployment"]["spec"]["template"]["spec"]["containers"][0])
    assert env[contract.TEAMS_LOGIN_URL] == "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.us"
    assert env[contract.TEAMS_OAUTH_SCOPE] == "https://api.botframework.us"


def test_the_cpu_limit_skip_is_annotated_only_where_there_is_no_cpu_limit() -> None:
    """checkov's CKV_K8S_11 is skipped in place with its reason, and only while the choice holds."""
    objects = _render(minimal())
    for kind in ("Deployment", "CronJob"):
        skip = objects[kind]["metadata"]["annotations"]["checkov.io/skip1"]
        assert skip.startswith("CKV_K8S_11=no CPU limit by choice"), kind
    limited = _render(with_path(minimal(), "spec.worker.resources", {"limits": {"cpu": "1", "memory": "512Mi"}}))
    assert "checkov.io/skip1" not in limited["Deployment"]["metadata"].get("annotations", {})
