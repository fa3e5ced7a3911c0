"""The states of a digest request's row (`digest_requests.state`), shared by the store and its SQL."""

RECEIVED, SENDING, SENT, SKIPPED, FAILED = "received", "sending", "sent", "skipped", "failed"
