"""The DigestPipeline operator (Kopf): reconciles each pipeline into its worker Deployment, KEDA ScaledObject and
TriggerAuthentication, DLQ monitor CronJob, NetworkPolicy and monitoring objects; pins images by digest, drives
rollouts, requeues dead letters per policy and reports in conditions and Events.

Pure core: `render/` (spec → children), `conditions`, `drift`, `rollout`, `status`, `deadletter` decisions. Thin I/O:
`k8s` (the API client), `cache` (label-selected list+watch caches the reconciles read), `registry`, `admission`
(the webhook), `handlers`/`runtime`/`main` (Kopf wiring)."""
