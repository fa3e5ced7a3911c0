"""Table definitions (SQLAlchemy Core). The schema is created and upgraded only by the Alembic migrations."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

conversation_references = Table(
    "conversation_references", metadata,
    Column("conversation_id", String(1024), primary_key=True),
    Column("service_url", String(2048), nullable=False),
    Column("tenant_id", String(64), nullable=True),  # kept explicitly: the serialized reference loses it
    Column("bot_id", String(256), nullable=True),
    Column("channel_id", String(64), nullable=False, default="msteams"),
    Column("reference", Text, nullable=False),  # JSON of the Bot Framework ConversationReference
    Column("active", Boolean, nullable=False, default=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

digest_requests = Table(
    "digest_requests", metadata,
    Column("request_id", String(256), primary_key=True),
    Column("message_id", String(256), nullable=True),
    Column("conversation_id", String(1024), nullable=False),
    Column("state", String(16), nullable=False),  # received | sending | sent | skipped | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", Float, nullable=True),  # epoch seconds: a `sending` claim is held until then
    Column("activity_id", String(256), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

digest_items = Table(
    "digest_items", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(256), nullable=False),
    Column("audience", String(256), nullable=True),
    Column("title", String(512), nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("url", String(2048), nullable=True),
    Column("score", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_digest_items_created_at", "created_at"),
)
