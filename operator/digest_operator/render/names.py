"""The deterministic names of every child of a pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from digest_operator.render.meta import CRONJOB_MAX, SCALED_OBJECT_MAX, child_name


@dataclass(frozen=True)
class ChildNames:
    service_account: str
    deployment: str
    scaled_object: str
    trigger_auth: str
    monitor_config: str
    monitor_cronjob: str
    pod_monitor: str
    prometheus_rule: str
    network_policy: str

    @classmethod
    def of(cls, pipeline: str) -> ChildNames:
        return cls(
            service_account=child_name(pipeline, "-worker"),
            deployment=child_name(pipeline, "-worker"),
            scaled_object=child_name(pipeline, "", SCALED_OBJECT_MAX),
            trigger_auth=child_name(pipeline, "-servicebus"),
            monitor_config=child_name(pipeline, "-dlq-monitor"),
            monitor_cronjob=child_name(pipeline, "-dlq-monitor", CRONJOB_MAX),
            pod_monitor=child_name(pipeline, "-worker"),
            prometheus_rule=child_name(pipeline, "-dead-letter"),
            network_policy=child_name(pipeline, "-worker"),
        )
