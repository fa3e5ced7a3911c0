"""What the worker knows about one received message while it is processed (no heavy imports: the receive loop
needs it before the processing libraries are loaded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digest_worker.request import DigestRequest


@dataclass
class MessageContext:
    """What the worker knows about one received message; the parsed request is kept here once."""

    message_id: str | None
    correlation_id: str | None
    delivery_count: int | None
    request: DigestRequest | None = None
    phase: str = "received"  # received → building → sending → done
    extra: dict[str, Any] = field(default_factory=dict)


def message_context(message: Any) -> MessageContext:
    mid, cid = message.message_id, message.correlation_id
    return MessageContext(str(mid) if mid is not None else None, str(cid) if cid is not None else None,
                          message.delivery_count)
