"""The digest worker (`python -m digest_worker`): receives digest requests from Service Bus, builds each digest once
and posts it proactively into its Teams conversation, idempotent under redelivery (a claim in SQLite or PostgreSQL),
with poison handling aligned with maxDeliveryCount, metrics and a graceful stop.

Pure core: `request`/`body` (parse once, AMQP body types normalised), `card`, `settlement` and `failures`
(what to do with each outcome), `processing` (one message end to end). Thin I/O: `consumer`/`source` (Service
Bus), `teams` (botbuilder), `db` (the store), `app` (wiring)."""
