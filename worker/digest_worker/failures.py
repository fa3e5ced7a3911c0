"""What can go wrong while handling one message, classified once so settlement can decide purely."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Category(Enum):
    PERMANENT = "Permanent"  # retrying cannot help: dead-letter now
    TRANSIENT = "Transient"  # retry (abandon) until the final attempt
    SYSTEMIC = "Systemic"  # nothing works until an operator or the platform fixes it: pause the worker


@dataclass(frozen=True)
class Failure:
    """A classified failure. `kind` is CamelCase and ends up in the dead-letter reason."""

    category: Category
    kind: str
    detail: str
    retry_after: float | None = None
    status: int | None = None


class FailureError(Exception):
    """Raised by the I/O modules with an already classified failure."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.category.value}.{failure.kind}: {failure.detail}")
        self.failure = failure


def permanent(kind: str, detail: str, *, status: int | None = None) -> FailureError:
    return FailureError(Failure(Category.PERMANENT, kind, detail, status=status))


def transient(kind: str, detail: str, *, retry_after: float | None = None, status: int | None = None) -> FailureError:
    return FailureError(Failure(Category.TRANSIENT, kind, detail, retry_after=retry_after, status=status))


def systemic(kind: str, detail: str) -> FailureError:
    return FailureError(Failure(Category.SYSTEMIC, kind, detail))
