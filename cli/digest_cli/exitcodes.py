"""Named exit codes shared by every subcommand."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INVALID_INPUT = 1
    USAGE = 2  # click's own code for bad options
    DIFFERS = 3  # a --check found a difference
    ROLLOUT_FAILED = 4  # `rollout status`: failed or rolled back
    TIMED_OUT = 5  # `rollout status --watch` gave up waiting
    PARTIAL = 6  # dlq: some selected messages were left in the dead-letter queue or failed (see the summary)
    REFUSED = 7  # dlq: a destructive command without --yes on a non-TTY, or the confirmation was declined
    UNAVAILABLE = 8  # dlq: Service Bus (or the Kubernetes API for --pipeline) could not be reached or refused access
    NOT_FOUND = 9  # dlq show: no message with that sequence number in the dead-letter queue
