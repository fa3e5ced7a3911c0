"""The dead-letter monitor: a ConfigMap with the requeue policy and the CronJob that runs `digestctl dlq monitor`."""

from __future__ import annotations

import json
from typing import Any

from digest_api import contract
from digest_api.imageref import ImageRef
from digest_api.spec import DigestPipelineSpec
from digest_operator.render import pod
from digest_operator.render.meta import Owner, labels, metadata
from digest_operator.render.names import ChildNames

COMPONENT = "dlq-monitor"
POLICY_DIR = "/etc/digest-pipelines"
POLICY_KEY = "requeue-policy.json"
POLICY_PATH = f"{POLICY_DIR}/{POLICY_KEY}"
# The monitor writes its compact JSON report here; the operator reads it from the finished pod's status
# (containerStatuses[].state.terminated.message) into status.deadLetter.
TERMINATION_LOG = "/dev/termination-log"


def policy_document(owner: Owner, spec: DigestPipelineSpec) -> dict[str, Any]:
    """What the monitor evaluates: the requeue policy plus the queue facts it needs."""
    return {
        "pipeline": {"name": owner.name, "namespace": owner.namespace},
        "queue": spec.service_bus.queue,
        "maxDeliveryCount": spec.service_bus.max_delivery_count,
        "requeuePolicy": spec.dead_letter.requeue_policy.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def config_map(owner: Owner, spec: DigestPipelineSpec, names: ChildNames) -> dict[str, Any]:
    document = json.dumps(policy_document(owner, spec), indent=2, sort_keys=True) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.monitor_config, COMPONENT),
        "data": {POLICY_KEY: document},
    }


def cronjob(owner: Owner, spec: DigestPipelineSpec, names: ChildNames, image: ImageRef) -> dict[str, Any]:
    monitor = spec.dead_letter.monitor
    volume, mount = pod.tmp_volume()
    secret_env, secret_volumes, secret_mounts = pod.secret_files(pod.secrets(spec, worker=False))
    container = {
        "name": "dlq-monitor",
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "args": ["dlq", "monitor", "--policy", POLICY_PATH, "--termination-log", TERMINATION_LOG, "--output", "json"],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "env": [*pod.service_bus_env(owner.name, spec), *secret_env,
                pod.value(contract.REQUEUE_POLICY_FILE, POLICY_PATH)],
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "192Mi"}},
        "securityContext": pod.container_security_context(),
        "volumeMounts": [mount, {"name": "policy", "mountPath": POLICY_DIR, "readOnly": True}, *secret_mounts],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(owner, names.monitor_cronjob, COMPONENT, annotations=pod.scanner_skips(pod.NO_CPU_LIMIT)),
        "spec": {
            "schedule": monitor.schedule,
            "suspend": monitor.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(owner, COMPONENT)},  # the operator lists its Jobs by these
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": 900,
                    "ttlSecondsAfterFinished": 3600,
                    "template": {
                        "metadata": {"labels": {**labels(owner, COMPONENT), **pod.pod_labels(spec)}},
                        "spec": {
                            **pod.scheduling(spec, pod.service_account_name(spec, names)),
                            "restartPolicy": "Never",
                            "containers": [container],
                            "volumes": [volume, {"name": "policy", "configMap": {"name": names.monitor_config}},
                                        *secret_volumes],
                        },
                    },
                },
            },
        },
    }
