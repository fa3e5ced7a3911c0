"""Named exit codes shared by every subcommand."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INVALID_INPUT = 1
    USAGE = 2  # click's own code for bad options
    DIFFERS = 3  # a --check found a difference
    ROLLOUT_FAILED = 4  # `rollout status`: failed or rolled back
    TIMED_OUT = 5  # `rollout status --watch` gave up waiting
