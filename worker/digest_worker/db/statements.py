"""The store's per-message statements as SQLAlchemy Core constructs with bound parameters, built once per dialect.

PostgreSQL executes them through SQLAlchemy. For SQLite they are compiled ahead of time into `db/sqlite_sql.py`
(`python -m digest_worker.db.statements --write`; a unit test fails when that file is stale), so a SQLite worker runs
them with the stdlib driver without importing SQLAlchemy (~0.4-0.6 s of its cold start).
"""

from __future__ import annotations

import argparse
import pprint
import sys
from functools import cache
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Boolean, DateTime, Float, Integer, and_, bindparam, or_, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from digest_worker.db.states import FAILED, RECEIVED, SENDING
from digest_worker.db.tables import conversation_references, digest_items, digest_requests

GENERATED = Path(__file__).with_name("sqlite_sql.py")
SQLITE = sqlite_dialect.dialect(paramstyle="named")
KINDS: tuple[tuple[type[TypeEngine[Any]], str], ...] = ((DateTime, "datetime"), (Boolean, "boolean"),
                                                        (Float, "float"), (Integer, "integer"))


def _now() -> Any:
    return bindparam("p_now", type_=digest_requests.c.updated_at.type)


def _upsert_received(dialect: str) -> Executable:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert_: Any = pg_insert if dialect == "postgresql" else sqlite_insert
    now = _now()
    statement: Executable = (
        insert_(digest_requests)
        .values(request_id=bindparam("p_request"), message_id=bindparam("p_message"),
                conversation_id=bindparam("p_conversation"), state=RECEIVED, attempts=1, created_at=now,
                updated_at=now)
        .on_conflict_do_update(index_elements=["request_id"],
                               set_={"attempts": digest_requests.c.attempts + 1, "updated_at": now})
        .returning(digest_requests.c.state))
    return statement


def _items(owner: bool, audience: bool) -> Executable:
    query = select(digest_items).where(digest_items.c.created_at >= bindparam("p_since",
                                                                             type_=digest_items.c.created_at.type))
    if owner:
        query = query.where(digest_items.c.owner == bindparam("p_owner"))
    if audience:
        query = query.where(digest_items.c.audience == bindparam("p_audience"))
    return query.order_by(digest_items.c.score.desc(), digest_items.c.created_at.desc(),
                          digest_items.c.id).limit(bindparam("p_limit", type_=Integer()))


@cache
def statements(dialect: str) -> dict[str, Executable]:
    requests, refs = digest_requests.c, conversation_references.c
    now = _now()
    lease_now = bindparam("p_lease_now", type_=Float())
    statements: dict[str, Executable] = {
        "upsert_received": _upsert_received(dialect),
        "reference": select(conversation_references).where(refs.conversation_id == bindparam("p_conversation")),
        "claim": (update(digest_requests)
                  .where(requests.request_id == bindparam("p_request"))
                  .where(or_(requests.state == RECEIVED, requests.state == FAILED,
                             and_(requests.state == SENDING, requests.lease_until < lease_now)))
                  .values(state=SENDING, lease_until=bindparam("p_lease_until", type_=Float()), updated_at=now)),
        "claim_state": select(requests.state, requests.activity_id).where(
            requests.request_id == bindparam("p_request")),
        "finish": (update(digest_requests).where(requests.request_id == bindparam("p_request"))
                   .values(state=bindparam("p_state"), activity_id=bindparam("p_activity"),
                           last_error=bindparam("p_error"), lease_until=None, updated_at=now)),
        "request_row": select(digest_requests).where(requests.request_id == bindparam("p_request")),
        "deactivate": (update(conversation_references).where(refs.conversation_id == bindparam("p_conversation"))
                       .values(active=False, updated_at=now)),
    }
    for owner in (False, True):
        for audience in (False, True):
            statements[f"items:{owner}:{audience}"] = _items(owner, audience)
    return statements



def _kind(type_: TypeEngine[Any], processor: Any) -> str | None:
    """The stdlib conversion (`db.sqlite_ledger.CONVERSIONS`) standing in for SQLAlchemy's processor, if any."""
    if processor is None:
        return None
    for cls, kind in KINDS:
        if isinstance(type_, cls):
            return kind
    raise TypeError(f"no stdlib conversion for {type_!r}: add one to db.sqlite_ledger.CONVERSIONS")


def compile_sqlite(statement: Executable) -> tuple[str, dict[str, Any], dict[str, str], list[tuple[str, str | None]]]:
    """(SQL with named parameters, fixed parameter values, parameter → conversion, result columns → conversion)."""
    compiled = cast(ClauseElement, statement).compile(dialect=SQLITE)
    assert isinstance(compiled, SQLCompiler)
    sql = str(compiled)
    binds = {name: bind for name, bind in compiled.binds.items() if f":{name}" in sql}
    defaults = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
    conversions = {name: kind for name, bind in binds.items()
                   if (kind := _kind(bind.type, bind.type.dialect_impl(SQLITE).bind_processor(SQLITE))) is not None}
    columns = list(getattr(statement, "exported_columns", None) or [])
    results = [(c.key, _kind(c.type, c.type.dialect_impl(SQLITE).result_processor(SQLITE, None))) for c in columns]
    return sql, dict(sorted(defaults.items())), dict(sorted(conversions.items())), results


def generated_source() -> str:
    lines = ['"""Generated by `python -m digest_worker.db.statements --write` from `db/statements.py`: do not edit."""',
             "", "from typing import Any", "",
             "STATEMENTS: dict[str, tuple[str, dict[str, Any], dict[str, str], list[tuple[str, str | None]]]] = {"]
    for name, statement in statements("sqlite").items():
        spec = pprint.pformat(compile_sqlite(statement), width=104, sort_dicts=False)
        lines.append(f"    {name!r}:\n        " + spec.replace("\n", "\n        ") + ",")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {GENERATED.name} (default: check it)")
    args = parser.parse_args()
    source = generated_source()
    if args.write:
        GENERATED.write_text(source)
    elif GENERATED.read_text() != source:
        sys.exit(f"{GENERATED} is stale: run python -m digest_worker.db.statements --write")


if __name__ == "__main__":
    main()
