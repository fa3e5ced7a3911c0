"""Create and upgrade the schema with Alembic, on an async engine; check that the schema is current."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
ADVISORY_LOCK = 0x64676573  # serialises concurrent upgrades of replicas starting together (PostgreSQL)
HEAD = "0001"
"""The newest revision (a unit test keeps it equal to Alembic's head): lets a worker whose schema is current skip
importing Alembic at start-up, which is a good part of a cold start."""


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if revision == "head" and await current_revision(engine) == HEAD:
        return
    from alembic import command
    from sqlalchemy import text

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's revision, None before the first migration (read without importing Alembic)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        has_table = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
        if not has_table:
            return None
        row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    return str(row[0]) if row else None
