"""Initial schema: conversation_references, digest_requests, digest_items.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "conversation_references",
        sa.Column("conversation_id", sa.String(1024), primary_key=True),
        sa.Column("service_url", sa.String(2048), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("bot_id", sa.String(256), nullable=True),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "digest_requests",
        sa.Column("request_id", sa.String(256), primary_key=True),
        sa.Column("message_id", sa.String(256), nullable=True),
        sa.Column("conversation_id", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("activity_id", sa.String(256), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "digest_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("audience", sa.String(256), nullable=True),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("url", sa.String(2048), nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_digest_items_created_at", "digest_items", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_digest_items_created_at", "digest_items")
    op.drop_table("digest_items")
    op.drop_table("digest_requests")
    op.drop_table("conversation_references")
