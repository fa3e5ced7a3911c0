"""The worker's environment contract: the variables the operator renders and the worker reads.

Kept free of dependencies so the operator can import it without the worker's runtime libraries.
"""

from __future__ import annotations

from typing import Final

PIPELINE: Final = "DIGEST_PIPELINE"
POD_NAME: Final = "DIGEST_POD_NAME"
SERVICEBUS_NAMESPACE: Final = "DIGEST_SERVICEBUS_NAMESPACE"
SERVICEBUS_CONNECTION_STRING: Final = "DIGEST_SERVICEBUS_CONNECTION_STRING"
SERVICEBUS_QUEUE: Final = "DIGEST_SERVICEBUS_QUEUE"
MAX_DELIVERY_COUNT: Final = "DIGEST_MAX_DELIVERY_COUNT"
CONCURRENCY: Final = "DIGEST_CONCURRENCY"
PREFETCH: Final = "DIGEST_PREFETCH"
MAX_LOCK_RENEWAL_SECONDS: Final = "DIGEST_MAX_LOCK_RENEWAL_SECONDS"
DRAIN_SECONDS: Final = "DIGEST_DRAIN_SECONDS"
METRICS_PORT: Final = "DIGEST_METRICS_PORT"
TEAMS_APP_ID: Final = "DIGEST_TEAMS_APP_ID"
TEAMS_APP_TYPE: Final = "DIGEST_TEAMS_APP_TYPE"
TEAMS_TENANT_ID: Final = "DIGEST_TEAMS_TENANT_ID"
TEAMS_APP_PASSWORD: Final = "DIGEST_TEAMS_APP_PASSWORD"
DATABASE_URL: Final = "DIGEST_DATABASE_URL"
REQUEUE_POLICY_FILE: Final = "DIGEST_REQUEUE_POLICY_FILE"

# Seconds between the drain deadline the worker uses and the pod's terminationGracePeriodSeconds.
DRAIN_MARGIN_SECONDS: Final = 5
