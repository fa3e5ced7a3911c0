"""The JSON files `digestctl references import` and `digestctl items import` read: pure parsing, and `import_file`,
which stores them in the worker's database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from digest_worker.card import DigestItem
from digest_worker.db.store import StoredReference


class ImportError_(ValueError):
    """A file that cannot be imported; the message names the entry and field."""


class ReferenceEntry(BaseModel):
    """A conversation reference, as a Teams bot would store it when it is added to a conversation."""

    model_config = ConfigDict(extra="forbid")
    conversation_id: Annotated[str, Field(min_length=1, max_length=1024)]
    service_url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)]
    tenant_id: str | None = None
    bot_id: str | None = None
    bot_name: str | None = None
    channel_id: str = "msteams"
    active: bool = True
    reference: dict[str, Any] | None = None
    """The serialized Bot Framework ConversationReference; built from the fields above when absent."""

    def stored(self) -> StoredReference:
        reference = self.reference or {
            "channelId": self.channel_id,
            "serviceUrl": self.service_url,
            "conversation": {"id": self.conversation_id, "conversationType": "channel",
                             **({"tenantId": self.tenant_id} if self.tenant_id else {})},
            **({"bot": {"id": self.bot_id, "name": self.bot_name or ""}} if self.bot_id else {}),
        }
        return StoredReference(self.conversation_id, self.service_url, self.tenant_id, self.bot_id, self.channel_id,
                               reference, self.active)


class ItemEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: Annotated[str, Field(min_length=1, max_length=256)]
    title: Annotated[str, Field(min_length=1, max_length=512)]
    summary: str = ""
    url: Annotated[str, Field(max_length=2048)] | None = None
    score: float = 0.0
    created_at: datetime | None = None
    audience: str | None = None

    def item(self, now: datetime) -> tuple[DigestItem, str | None]:
        created = self.created_at or now
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return DigestItem(self.owner, self.title, self.summary, self.url, self.score, created), self.audience


def _parse(text: str, adapter: TypeAdapter[Any]) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportError_(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(data, dict):
        data = [data]
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        problems = [f"[{'.'.join(str(p) for p in e['loc'])}]: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ImportError_("; ".join(problems[:20])) from None


def parse_references(text: str) -> list[StoredReference]:
    return [e.stored() for e in _parse(text, TypeAdapter(list[ReferenceEntry]))]


def parse_items(text: str, now: datetime | None = None) -> list[tuple[DigestItem, str | None]]:
    when = now or datetime.now(UTC)
    return [e.item(when) for e in _parse(text, TypeAdapter(list[ItemEntry]))]


async def import_file(text: str, kind: str, database_url: str | None) -> int:
    """Parse `text` (kind `references` or `items`) and upsert it into the database (migrated first); rows written."""
    from digest_worker.config import DEFAULT_DATABASE_URL, async_database_url
    from digest_worker.db.store import Store

    rows: Any = parse_references(text) if kind == "references" else parse_items(text)
    store = Store.open(async_database_url(database_url or DEFAULT_DATABASE_URL))
    try:
        await store.upgrade()
        return await (store.put_references(rows) if kind == "references" else store.put_items(rows))
    finally:
        await store.close()
