"""The `DigestPipeline` spec: the single source of truth for the CRD schema, the renderers and the docs.

Field descriptions below are the user documentation: they are copied into the CRD (`kubectl explain dgp.spec`)
and into `docs/spec.md`. Every model refuses unknown fields, so a typo is an error that names its path.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from digest_api import contract
from digest_api.imageref import IMAGE_PATTERN as IMAGE_PATTERN

# The Prometheus duration syntax (units in descending order), which PrometheusRule `for` and PodMonitor `interval`
# accept; the DLQ monitor parses the same syntax.
DURATION_PATTERN = r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
FQDN_PATTERN = r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUEUE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,258}[A-Za-z0-9])?$"
QUANTITY_PATTERN = (  # non-negative Kubernetes quantities
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
RESOURCE_NAME_PATTERN = (
    r"^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z.]+|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
INT_OR_PERCENT_PATTERN = r"^[0-9]+%?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

# Environment variables the operator renders for the worker; spec.worker.env may not override them.
RESERVED_ENV_PREFIXES = ("DIGEST_", "AZURE_")

INT_OR_STRING: dict[str, Any] = {"x-kubernetes-int-or-string": True}


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
        use_attribute_docstrings=True,
    )


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _int_or_percent(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(INT_OR_PERCENT_PATTERN, value):
        raise ValueError("must be an integer or a percentage such as '25%'")
    if isinstance(value, str) and value.isdigit():
        return int(value)  # Kubernetes accepts only percentages as strings
    if isinstance(value, int) and value < 0:
        raise ValueError("must not be negative")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, text in value.items():
        if not re.fullmatch(LABEL_KEY_PATTERN, key) or len(key) > 316:
            raise ValueError(f"{key!r} is not a valid label key")
        if not re.fullmatch(LABEL_VALUE_PATTERN, text):
            raise ValueError(f"{text!r} (for {key}) is not a valid label value")
    return value


def _resource_names(value: dict[str, int | str]) -> dict[str, int | str]:
    for key in value:
        if not re.fullmatch(RESOURCE_NAME_PATTERN, key):
            raise ValueError(f"{key!r} is not a resource name (cpu, memory, ephemeral-storage, hugepages-<size> "
                             f"or <domain>/<name>)")
    return value


def _quantity(value: int | str) -> str:
    text = str(value)
    if not re.fullmatch(QUANTITY_PATTERN, text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 100m, 128Mi, 1)")
    return text


Quantity = Annotated[
    int | str, AfterValidator(_quantity), Field(json_schema_extra={**INT_OR_STRING, "pattern": QUANTITY_PATTERN}),
]
IntOrPercent = Annotated[int | str, AfterValidator(_int_or_percent), Field(json_schema_extra=INT_OR_STRING)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
Regex = Annotated[str, AfterValidator(_check_regex), Field(max_length=1024)]


class SecretKeyRef(Model):
    """A key of a Secret in the pipeline's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the Secret."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key inside the Secret."""


class WorkloadIdentity(Model):
    """Azure Workload Identity: a user-assigned managed identity federated with the worker's ServiceAccount
    (and with KEDA's keda-operator ServiceAccount, which authenticates the scaler)."""

    client_id: str = Field(pattern=UUID_PATTERN)
    """Client id (not object id) of the managed identity."""
    tenant_id: str | None = Field(default=None, pattern=UUID_PATTERN)
    """Tenant of the identity; defaults to the tenant the workload identity webhook injects."""


class ServiceBusAuth(Model):
    """How the worker, the DLQ monitor and KEDA authenticate to Service Bus. Set exactly one."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "has(self.workloadIdentity) != has(self.connectionStringSecretRef)",
            "message": "set exactly one of workloadIdentity or connectionStringSecretRef",
        }]},
    )

    workload_identity: WorkloadIdentity | None = None
    """Recommended: Microsoft Entra workload identity, no secret in the cluster."""
    connection_string_secret_ref: SecretKeyRef | None = None
    """A Secret holding a Service Bus connection string (SAS policy with Manage rights, which KEDA needs
    to read queue counts). For the local emulator and namespaces without Entra auth."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ServiceBusAuth:
        if (self.workload_identity is None) == (self.connection_string_secret_ref is None):
            raise ValueError("set exactly one of workloadIdentity or connectionStringSecretRef")
        return self


class ServiceBus(Model):
    """The queue the worker consumes."""

    namespace: str = Field(max_length=253, pattern=FQDN_PATTERN)
    """Fully qualified namespace, e.g. `contoso.servicebus.windows.net`."""
    queue: str = Field(min_length=1, max_length=260, pattern=QUEUE_PATTERN)
    """Queue holding the digest requests."""
    max_delivery_count: int = Field(default=10, ge=1, le=2000)
    """Must equal the queue's MaxDeliveryCount: the worker dead-letters a transiently failing message itself on the
    final attempt (reason `Transient.Exhausted.<Kind>`) instead of letting the broker use its generic reason."""
    auth: ServiceBusAuth
    """Credentials; see `workloadIdentity` and `connectionStringSecretRef`."""


class Scaling(Model):
    """KEDA scaling on queue depth (active messages only; dead-lettered messages do not scale the worker)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must be less than or equal to maxReplicas",
            "fieldPath": ".minReplicas",
        }]},
    )

    min_replicas: int = Field(default=0, ge=0, le=1000)
    """Replicas when the queue is idle; 0 scales the worker to zero."""
    max_replicas: int = Field(default=10, ge=1, le=1000)
    """Upper bound of replicas."""
    messages_per_replica: int = Field(default=5, ge=1, le=100000)
    """Target active messages per replica (KEDA `messageCount`): 5 means one replica per 5 queued messages."""
    activation_messages: int = Field(default=0, ge=0, le=100000)
    """The worker scales up from zero when more than this many messages are queued (KEDA `activationMessageCount`)."""
    polling_interval: int = Field(default=30, ge=1, le=3600)
    """Seconds between KEDA's queue checks while scaled to zero. Keep >= 30 on shared namespaces: the management API
    throttles frequent count reads."""
    cooldown_period: int = Field(default=300, ge=0, le=86400)
    """Seconds after the last active check before scaling back to zero."""

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})"
            )
        return self


class Resources(Model):
    """Compute resources of the worker container (Kubernetes quantities)."""

    requests: Annotated[dict[str, Quantity], AfterValidator(_resource_names)] = Field(
        default_factory=lambda: dict[str, int | str](cpu="100m", memory="128Mi"))
    """Requested resources; default 100m CPU, 128Mi memory."""
    limits: Annotated[dict[str, Quantity], AfterValidator(_resource_names)] = Field(
        default_factory=lambda: dict[str, int | str](memory="256Mi"))
    """Limits; default 256Mi memory and no CPU limit (CPU limits throttle bursty I/O-bound workers)."""


class SecretKeySelector(SecretKeyRef):
    optional: bool | None = None
    """Whether the Secret or its key must exist."""


class ConfigMapKeySelector(SecretKeyRef):
    optional: bool | None = None
    """Whether the ConfigMap or its key must exist."""


class FieldSelector(Model):
    field_path: str = Field(min_length=1)
    """Path of the pod field, e.g. `metadata.name`."""


class EnvVarSource(Model):
    """Where an env value comes from. Set exactly one."""

    secret_key_ref: SecretKeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: ConfigMapKeySelector | None = None
    """A key of a ConfigMap."""
    field_ref: FieldSelector | None = None
    """A field of the pod, e.g. `metadata.namespace`."""

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        chosen = [x for x in (self.secret_key_ref, self.config_map_key_ref, self.field_ref) if x is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of secretKeyRef, configMapKeyRef or fieldRef")
        return self


class EnvVar(Model):
    """An extra environment variable for the worker (as in a Pod's `env`)."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    """Variable name; names starting with `DIGEST_` or `AZURE_` are reserved for the operator and the
    workload identity webhook."""
    value: str | None = None
    """Literal value."""
    value_from: EnvVarSource | None = None
    """Value taken from a Secret, ConfigMap or pod field."""

    @model_validator(mode="after")
    def _not_reserved(self) -> EnvVar:
        if self.name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"{self.name} is reserved (names starting with DIGEST_ or AZURE_ are set by the operator)")
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class Toleration(Model):
    """A pod toleration (as in a Pod's `tolerations`)."""

    key: str | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """How key and value are compared; default Equal."""
    value: str | None = None
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect NoExecute")
        if not self.key and self.operator != "Exists":
            raise ValueError("an empty key requires operator Exists")
        return self


class LocalObjectReference(Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the object in the pipeline's namespace."""


class Worker(Model):
    """The worker Deployment."""

    concurrency: int = Field(default=4, ge=1, le=256)
    """Messages processed at once per replica."""
    prefetch: int = Field(default=0, ge=0, le=1000)
    """Messages prefetched per replica (0 disables prefetch). Prefetched messages are locked: keep it small."""
    max_lock_renewal_seconds: int = Field(default=300, ge=0, le=86400)
    """How long `AutoLockRenewer` keeps renewing a message lock while it is processed."""
    termination_grace_period_seconds: int = Field(default=60, ge=10, le=3600)
    """Time a stopping pod gets to finish in-flight messages; the worker drains for this minus 5 seconds,
    then abandons what is left so Service Bus redelivers it."""
    metrics_port: int = Field(default=8080, ge=1024, le=65535)
    """Port serving `/metrics`, `/healthz` and `/readyz`."""
    resources: Resources = Field(default_factory=Resources, json_schema_extra={"default": {}})
    """Container resources."""
    env: list[EnvVar] = Field(default_factory=list, max_length=100)
    """Extra environment variables."""
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Use this existing ServiceAccount instead of the one the operator creates (`<name>-worker`). It must carry the
    workload identity annotations itself."""
    node_selector: Labels = Field(default_factory=dict)
    """Node labels the worker pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations of the worker pods."""


def _service_url_entry(value: str) -> str:
    if value.strip().lower() != contract.DEFAULT_ENTRY:
        contract.parse_service_url_rule(value.strip())
    return value.strip()


ServiceUrlEntry = Annotated[str, AfterValidator(_service_url_entry), Field(min_length=1, max_length=512)]


class TeamsApp(Model):
    """The Teams bot identity used for proactive delivery."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            {
                "rule": "self.appType == 'UserAssignedMSI' ? !has(self.passwordSecretRef) "
                        ": has(self.passwordSecretRef)",
                "message": "passwordSecretRef is required for SingleTenant and MultiTenant and not allowed for "
                           "UserAssignedMSI",
            },
            {
                "rule": "self.appType == 'MultiTenant' || has(self.tenantId)",
                "message": "tenantId is required for SingleTenant and UserAssignedMSI",
            },
        ]},
    )

    app_id: str = Field(pattern=UUID_PATTERN)
    """Microsoft App ID of the bot (for UserAssignedMSI: the managed identity's client id)."""
    app_type: Literal["UserAssignedMSI", "SingleTenant", "MultiTenant"] = "UserAssignedMSI"
    """Bot Framework app type."""
    tenant_id: str | None = Field(default=None, pattern=UUID_PATTERN)
    """Microsoft Entra tenant of the bot; required for SingleTenant and UserAssignedMSI."""
    password_secret_ref: SecretKeyRef | None = None
    """Secret holding the app password (client secret); not used with UserAssignedMSI."""
    login_url: str | None = Field(default=None, pattern=r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$",
                                  max_length=512)
    """Token authority of the bot (default: the Azure public cloud's); for a sovereign cloud, e.g.
    `https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.us`, or a local token endpoint."""
    oauth_scope: str | None = Field(default=None, pattern=r"^https://[^\s]+$", max_length=512)
    """OAuth scope of the Bot Connector (default `https://api.botframework.com`; US Government:
    `https://api.botframework.us`)."""
    service_urls: list[ServiceUrlEntry] = Field(default_factory=list, max_length=50)
    """Where the bot may send its token: the conversation references' `serviceUrl`s it posts to, as
    `scheme://host[:port][/path]` prefixes (`*.domain` for any host below it; `default` for the built-in list).
    Empty: https to the Bot Framework's service hosts only (see docs/worker.md); a reference elsewhere is
    dead-lettered with `Permanent.TeamsServiceUrlNotAllowed`."""

    @model_validator(mode="after")
    def _credentials_match_type(self) -> TeamsApp:
        if self.app_type == "UserAssignedMSI" and self.password_secret_ref is not None:
            raise ValueError("passwordSecretRef is not allowed for appType UserAssignedMSI")
        if self.app_type != "UserAssignedMSI" and self.password_secret_ref is None:
            raise ValueError(f"passwordSecretRef is required for appType {self.app_type}")
        if self.app_type != "MultiTenant" and self.tenant_id is None:
            raise ValueError(f"tenantId is required for appType {self.app_type}")
        return self


class Database(Model):
    """Where the worker records delivered digests (its idempotency store)."""

    url_secret_ref: SecretKeyRef | None = None
    """Secret holding a SQLAlchemy-style URL (`postgresql://...`). Without it each pod uses its own SQLite file,
    which de-duplicates redeliveries only within one pod: use PostgreSQL in production."""


class MessageMatch(Model):
    """Which dead-lettered messages a rule applies to; every set criterion must match."""

    reason: str = Field(default="*", min_length=1, max_length=1024)
    """Glob on the dead-letter reason, e.g. `Transient.Exhausted.*` or `MaxDeliveryCountExceeded`."""
    description: Regex | None = None
    """Regular expression searched in the dead-letter error description."""
    min_age: Duration | None = None
    """Only messages dead-lettered at least this long ago, e.g. `10m`."""
    max_age: Duration | None = None
    """Only messages dead-lettered at most this long ago, e.g. `7d`."""


class Backoff(Model):
    """Delay before a message is requeued again: initial * multiplier^(requeues so far), capped at max."""

    initial: Duration = "1m"
    """Delay before the first requeue."""
    multiplier: int = Field(default=2, ge=1, le=100)
    """Growth factor per requeue."""
    max: Duration = "1h"
    """Upper bound of the delay."""


class RequeueRule(Model):
    """One rule of the requeue policy; the first matching rule decides."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
    """Rule name, reported in the monitor's summary."""
    match: MessageMatch = Field(default_factory=MessageMatch, json_schema_extra={"default": {}})
    """Selection of dead-lettered messages."""
    action: Literal["Requeue", "Skip", "Park"]
    """Requeue: send a copy back to the queue, then complete the dead-lettered original. Skip: leave it.
    Park: move it to `parkQueue`."""
    max_requeues: int = Field(default=3, ge=0, le=100)
    """Requeue at most this many times (tracked in the `x-requeue-count` property of the copy). A message that has
    been requeued this often is never requeued automatically again: the policy's `defaultAction` applies to it."""
    backoff: Backoff = Field(default_factory=Backoff, json_schema_extra={"default": {}})
    """Delay between requeues of the same message."""


class CircuitBreaker(Model):
    """Pauses automatic requeues when requeued messages keep coming back to the dead-letter queue."""

    threshold: int = Field(default=10, ge=1, le=100000)
    """Open the circuit when at least this many messages requeued within `window` are dead-lettered again."""
    window: Duration = "15m"
    """How far back a requeue counts (measured from the `x-requeued-at` property of the copy)."""


class RequeuePolicy(Model):
    """Automatic handling of dead-lettered messages, evaluated by the DLQ monitor CronJob."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "(!has(self.rules) || !self.rules.exists(r, r.action == 'Park')) && "
                    "(!has(self.defaultAction) || self.defaultAction != 'Park') || has(self.parkQueue)",
            "message": "parkQueue is required when a rule or defaultAction uses action Park",
        }]},
    )

    mode: Literal["Active", "DryRun"] = "Active"
    """DryRun evaluates and reports the decisions (status, metrics, the monitor's report) without touching a
    message."""

    rules: list[RequeueRule] = Field(default_factory=list, max_length=50)
    """Ordered rules, first match wins; messages matching no rule get `defaultAction`."""
    park_queue: str | None = Field(default=None, min_length=1, max_length=260, pattern=QUEUE_PATTERN)
    """Queue receiving parked messages."""
    default_action: Literal["Skip", "Park"] = "Skip"
    """What happens to messages matching no rule, and to messages that reached their rule's `maxRequeues`.
    Requeue is not offered here on purpose: requeueing everything needs an explicit catch-all rule."""
    max_messages_per_run: int = Field(default=500, ge=1, le=100000)
    """Upper bound of messages requeued or parked per monitor run; the rest waits for the next run."""
    max_messages_per_second: int = Field(default=50, ge=1, le=10000)
    """Rate limit of requeues and parks within a run."""
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, json_schema_extra={"default": {}})
    """Stops automatic requeues (parks continue) while requeued messages fail again."""

    @model_validator(mode="after")
    def _park_needs_queue(self) -> RequeuePolicy:
        parks = self.default_action == "Park" or any(rule.action == "Park" for rule in self.rules)
        if self.park_queue is None and parks:
            raise ValueError("parkQueue is required when a rule or defaultAction uses action Park")
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self


class DeadLetterMonitor(Model):
    """The CronJob that inspects the dead-letter queue and applies the requeue policy."""

    schedule: str = Field(default="*/5 * * * *", pattern=CRON_PATTERN)
    """Cron schedule."""
    suspend: bool = False
    """Pause the monitor."""


class DeadLetter(Model):
    """Dead-letter monitoring, alerting and the requeue policy."""

    monitor: DeadLetterMonitor = Field(default_factory=DeadLetterMonitor, json_schema_extra={"default": {}})
    """The monitor CronJob."""
    alert_after: Duration = "5m"
    """Alert when the dead-letter queue has held messages for this long (PrometheusRule `for`)."""
    requeue_policy: RequeuePolicy = Field(default_factory=RequeuePolicy, json_schema_extra={"default": {}})
    """Automatic requeue policy."""


class Rollout(Model):
    """Rolling update of the worker Deployment."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",
            "message": "maxSurge and maxUnavailable must not both be zero",
        }]},
    )

    max_surge: IntOrPercent = "25%"
    """Extra pods allowed during a rollout (number or percentage)."""
    max_unavailable: IntOrPercent = 0
    """Pods allowed to be unavailable during a rollout (number or percentage)."""
    progress_deadline_seconds: int = Field(default=600, ge=30, le=86400)
    """A rollout making no progress for this long is reported as failed (`Degraded`, ProgressDeadlineExceeded)."""
    auto_rollback: bool = False
    """When a rollout fails (progress deadline exceeded), put the last digest that completed a rollout back into the
    Deployment, post a Warning Event naming both digests and set `Degraded=True` (reason RolledBack). The failed
    digest is not tried again until the spec changes."""
    history_limit: int = Field(default=5, ge=1, le=50)
    """Rollouts kept in `status.history`."""

    @model_validator(mode="after")
    def _not_both_zero(self) -> Rollout:
        if str(self.max_surge) in ("0", "0%") and str(self.max_unavailable) in ("0", "0%"):
            raise ValueError("maxSurge and maxUnavailable must not both be zero")
        unavailable = str(self.max_unavailable)
        if unavailable.endswith("%") and int(unavailable[:-1]) > 100:
            raise ValueError("maxUnavailable must not be more than 100%")
        return self


class ImagePolicy(Model):
    """How `spec.image` becomes the digest the workloads run. The operator never renders a bare tag into a
    workload, and a registry failure never rolls anything out (see docs/pinning.md)."""

    mode: Literal["Require", "Resolve", "Track"] = "Require"
    """`Require`: `spec.image` must carry a digest; a tag-only image is denied by the admission webhook (when
    installed) and otherwise refused by the operator (ImagePinned=False, reason TagNotAllowed, Warning Event) while
    the last pinned digest keeps running. `Resolve`: the operator resolves the tag through the registry's OCI
    distribution API (multi-arch images at the index digest; credentials from `imagePullSecrets`), records it in
    `status.image.resolved` and renders only the digest; it resolves again when the spec changes or when the
    annotation `digest.dev/resolve-requested-at` changes value. `Track`: as Resolve, and also every
    `trackInterval`, so a moved tag rolls out its new digest. When the registry is down or refuses, the last pinned
    digest keeps running, ImagePinned=False names the reason (RegistryUnavailable, TagNotFound, Unauthorized,
    RegistryNotAllowed) and the resolution is retried with backoff. An image with a digest is used as is in every
    mode."""
    track_interval: Duration = "5m"
    """Track mode: time between resolutions of the tag (the operator's resync interval is the lower bound)."""


class Monitoring(Model):
    """Prometheus Operator objects: a PodMonitor for worker metrics and a PrometheusRule with the dead-letter alert."""

    enabled: bool = True
    """Render the PodMonitor and PrometheusRule (needs the Prometheus Operator CRDs)."""
    labels: Labels = Field(default_factory=dict)
    """Extra labels for both objects, e.g. the `release` label your Prometheus selects on."""
    scrape_interval: Duration = "30s"
    """Scrape interval of the worker metrics."""


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a CIDR block: {exc}") from None
    return value


Cidr = Annotated[str, AfterValidator(_cidr), Field(max_length=64)]
PORT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$"


class LabelSelectorRequirement(Model):
    key: str = Field(max_length=317, pattern=LABEL_KEY_PATTERN)
    """Label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value is matched."""
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=list, max_length=100)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"values must not be empty with operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"values must be empty with operator {self.operator}")
        return self


class LabelSelector(Model):
    """A Kubernetes label selector; an empty selector selects everything."""

    match_labels: Labels = Field(default_factory=dict)
    """Labels that must all match."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=20)
    """Requirements that must all hold."""


class IPBlock(Model):
    cidr: Cidr
    """Allowed destination range, e.g. `10.20.0.0/16`."""
    except_: list[Cidr] = Field(default_factory=list, alias="except", max_length=50)
    """Ranges inside `cidr` that stay blocked."""


class NetworkPolicyPeer(Model):
    """A destination: an IP range, or pods chosen by namespace and/or pod labels (as in a NetworkPolicy)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "has(self.ipBlock) != (has(self.podSelector) || has(self.namespaceSelector))",
        "message": "set either ipBlock or podSelector/namespaceSelector",
    }]})

    ip_block: IPBlock | None = None
    """An IP range."""
    namespace_selector: LabelSelector | None = None
    """Namespaces (without podSelector: all their pods)."""
    pod_selector: LabelSelector | None = None
    """Pods (in the pipeline's namespace unless namespaceSelector is set)."""

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        if (self.ip_block is None) == (self.pod_selector is None and self.namespace_selector is None):
            raise ValueError("set either ipBlock or podSelector/namespaceSelector")
        return self


class NetworkPolicyPort(Model):
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    """Protocol."""
    port: Annotated[int, Field(ge=1, le=65535)] | Annotated[str, Field(pattern=PORT_NAME_PATTERN)] = Field(
        json_schema_extra=INT_OR_STRING)
    """Port number or named container port."""
    end_port: int | None = Field(default=None, ge=1, le=65535)
    """Last port of a range starting at `port` (a number)."""

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        if self.end_port is not None and (not isinstance(self.port, int) or self.end_port < self.port):
            raise ValueError("endPort needs a numeric port not greater than it")
        return self


class EgressRule(Model):
    """Extra destinations the worker and monitor pods may reach."""

    to: list[NetworkPolicyPeer] = Field(min_length=1, max_length=50)
    """Destinations (at least one: an empty list would allow every destination)."""
    ports: list[NetworkPolicyPort] = Field(min_length=1, max_length=50)
    """Destination ports (at least one)."""


class NetworkPolicySpec(Model):
    """The NetworkPolicy of the worker and DLQ monitor pods: ingress only to the metrics port; egress only to DNS
    (53), Service Bus (5671 AMQP, 443 AMQP over WebSockets and the management API), Teams and Entra ID (443),
    PostgreSQL (5432, when `database.urlSecretRef` is set) and the rules added here."""

    enabled: bool = True
    """Render the NetworkPolicy (it takes effect only where the cluster's network plugin enforces policies)."""
    egress: list[EgressRule] = Field(default_factory=list, max_length=20)
    """More egress, e.g. a database on another port, an in-cluster Service Bus emulator or a proxy."""


class DigestPipelineSpec(Model):
    """Desired state of a Service Bus digest worker pipeline."""

    image: str = Field(max_length=512, pattern=IMAGE_PATTERN)
    """Worker image: `repo@sha256:<64 hex>` or `repo:tag@sha256:<64 hex>`; a tag-only `repo:tag` only with
    `imagePolicy.mode` Resolve or Track (with Require it is refused: condition ImagePinned=False, reason
    TagNotAllowed, and never rolled out)."""
    image_policy: ImagePolicy = Field(default_factory=ImagePolicy, json_schema_extra={"default": {}})
    """Digest pinning: require a digest, or resolve (and optionally track) a tag."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    """Pull secrets for the worker and monitor pods."""
    service_bus: ServiceBus
    """Service Bus queue and credentials."""
    scaling: Scaling = Field(default_factory=Scaling, json_schema_extra={"default": {}})
    """KEDA autoscaling."""
    worker: Worker = Field(default_factory=Worker, json_schema_extra={"default": {}})
    """Worker process and pod settings."""
    teams: TeamsApp
    """Teams bot identity."""
    database: Database = Field(default_factory=Database, json_schema_extra={"default": {}})
    """Idempotency store."""
    dead_letter: DeadLetter = Field(default_factory=DeadLetter, json_schema_extra={"default": {}})
    """Dead-letter monitoring and requeue policy."""
    rollout: Rollout = Field(default_factory=Rollout, json_schema_extra={"default": {}})
    """Rolling update settings."""
    monitoring: Monitoring = Field(default_factory=Monitoring, json_schema_extra={"default": {}})
    """Prometheus Operator integration."""
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec, json_schema_extra={"default": {}})
    """Network isolation of the worker and monitor pods."""
