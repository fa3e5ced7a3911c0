"""Handling one digest request: parse once, check the ledger, build, post, record. Returns an `Outcome`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from digest_worker import failures
from digest_worker.body import normalise
from digest_worker.card import CardTooLarge, Digest, default_title, render
from digest_worker.config import WorkerConfig
from digest_worker.context import MessageContext, message_context
from digest_worker.db import states
from digest_worker.db import store as ledger
from digest_worker.db.store import Store
from digest_worker.failures import Category, FailureError
from digest_worker.logs import bind
from digest_worker.request import DigestRequest, InvalidMessage, parse_request
from digest_worker.settlement import Outcome, Result
from digest_worker.source import DigestSource
from digest_worker.teams import TeamsDelivery

log = logging.getLogger(__name__)
__all__ = ["MessageContext", "Processor", "message_context", "parse_message"]
DEACTIVATING_STATUSES = (403, 404)
RECORD_ATTEMPTS = 3


def parse_message(message: Any, ctx: MessageContext) -> DigestRequest:
    """Normalise the body (consumed exactly once) and parse it; the request is stored on `ctx`."""
    content_type = message.content_type
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    body_type = getattr(message.body_type, "value", str(message.body_type))
    ctx.request = parse_request(normalise(body_type, message.body, content_type), ctx.message_id)
    bind(request_id=ctx.request.request_id, conversation_id=ctx.request.conversation_id)
    return ctx.request


class Processor:
    def __init__(self, config: WorkerConfig, store: Store, source: DigestSource, teams: TeamsDelivery) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.teams = teams
        self.lease_seconds = config.teams_timeout_seconds + 10

    async def handle(self, message: Any, ctx: MessageContext) -> Outcome:
        try:
            request = parse_message(message, ctx)
        except InvalidMessage as exc:
            return Outcome(Result.INVALID, field=exc.field, detail=exc.detail)
        try:
            return await self.process(request, ctx)
        except FailureError as exc:
            return Outcome(Result.FAILED, exc.failure)

    async def process(self, request: DigestRequest, ctx: MessageContext) -> Outcome:
        store, rid = self.store, request.request_id
        state, reference = await store.begin_with_reference(rid, ctx.message_id, request.conversation_id)
        if state in ledger.DONE:
            return Outcome(Result.DUPLICATE)
        ctx.phase = "building"
        if reference is None:
            await self._finish_failed(rid, "no stored conversation reference")
            raise failures.permanent("UnknownConversation",
                                     f"conversation_id {request.conversation_id!r} has no stored reference")
        if not reference.active:
            await self._finish_failed(rid, "conversation reference inactive")
            raise failures.permanent("InactiveConversation",
                                     f"conversation {request.conversation_id!r} is marked inactive (bot removed?)")
        items = await self._fetch(request)
        if not items and not self.config.post_empty_digest:
            await store.finish(rid, states.SKIPPED)
            return Outcome(Result.SKIPPED)
        digest = Digest(request.title or default_title(request.date_range_days), request.date_range_days, items)
        try:
            activity = render(digest, max_bytes=self.config.card_max_bytes)
        except CardTooLarge as exc:
            await self._finish_failed(rid, str(exc))
            raise failures.permanent("CardTooLarge", str(exc)) from None
        claim = await store.claim(rid, self.lease_seconds)
        if claim.status == "done":
            return Outcome(Result.DUPLICATE)
        if claim.status == "held":
            raise failures.transient("DuplicateInFlight", f"request {rid!r} is being posted by another delivery")
        ctx.phase = "sending"
        try:
            activity_id = await self.teams.send(reference, activity)
        except FailureError as exc:
            failure = exc.failure
            if failure.category is Category.PERMANENT:
                await self._finish_failed(rid, exc.args[0])
                if failure.status in DEACTIVATING_STATUSES:
                    await self._quietly(store.deactivate(request.conversation_id))
            else:
                await self._quietly(store.finish(rid, states.RECEIVED, error=exc.args[0]))
            raise
        # Teams accepted: record it at once. A crash before this commit is the only window that can post twice.
        await self._record_sent(rid, activity_id)
        ctx.phase = "done"
        log.info("digest posted", extra={"activity_id": activity_id, "items": len(items)})
        return Outcome(Result.DELIVERED, activity_id=activity_id)

    async def _fetch(self, request: DigestRequest) -> list[Any]:
        try:
            return list(await self.source.fetch(request, datetime.now(UTC)))
        except FailureError:
            raise
        except Exception as exc:
            raise failures.transient("SourceFailed", f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    async def _record_sent(self, rid: str, activity_id: str | None) -> None:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                await self.store.finish(rid, states.SENT, activity_id=activity_id)
                return
            except FailureError:
                if attempt == RECORD_ATTEMPTS:
                    log.error("posted but could not record it; a redelivery may post again",
                              extra={"activity_id": activity_id})
                    raise
                await asyncio.sleep(0.2 * attempt)

    async def _finish_failed(self, rid: str, error: str) -> None:
        await self._quietly(self.store.finish(rid, states.FAILED, error=error))

    @staticmethod
    async def _quietly(operation: Any) -> None:
        try:
            await operation
        except FailureError as exc:
            log.warning("could not update the ledger: %s", exc)
