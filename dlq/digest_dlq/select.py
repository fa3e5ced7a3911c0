"""Which dead-lettered messages an operation acts on: the filters shared by list, stats, export, requeue, purge."""

from __future__ import annotations

import datetime
import fnmatch
import re
from dataclasses import dataclass

from digest_dlq.message import DlqMessage


@dataclass(frozen=True)
class Selection:
    """Every set criterion must match. Reason is a case-sensitive glob, description a regex (searched)."""

    reason: str | None = None
    description: re.Pattern[str] | None = None
    min_age: datetime.timedelta | None = None
    max_age: datetime.timedelta | None = None
    subject: str | None = None
    message_ids: frozenset[str] = frozenset()
    from_sequence: int | None = None
    to_sequence: int | None = None
    limit: int | None = None
    """At most this many messages (in sequence order); applied by the caller after matching."""

    def matches(self, message: DlqMessage, now: datetime.datetime) -> bool:
        if self.reason is not None and not fnmatch.fnmatchcase(message.reason, self.reason):
            return False
        if self.description is not None and not self.description.search(message.description):
            return False
        if self.from_sequence is not None and message.sequence_number < self.from_sequence:
            return False
        if self.to_sequence is not None and message.sequence_number > self.to_sequence:
            return False
        if self.subject is not None and message.subject != self.subject:
            return False
        if self.message_ids and (message.message_id not in self.message_ids
                                 and message.original_message_id not in self.message_ids):
            return False
        if self.min_age is not None or self.max_age is not None:
            age = message.age(now)
            if age is None:
                return False
            if self.min_age is not None and age < self.min_age:
                return False
            if self.max_age is not None and age > self.max_age:
                return False
        return True

    @property
    def is_everything(self) -> bool:
        return self == Selection(limit=self.limit)
