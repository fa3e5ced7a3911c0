"""`digestctl references import` and `digestctl items import`: load JSON files into the worker's database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from digest_api import contract


def _database_option(f: Any) -> Any:
    return click.option("--database-url", envvar=contract.DATABASE_URL, default=None,
                        help="SQLAlchemy URL (default: the worker's SQLite file).")(f)


def _import(path: Path, database_url: str | None, kind: str) -> int:
    from digest_worker.imports import ImportError_, import_file

    try:
        return asyncio.run(import_file(path.read_text(encoding="utf-8"), kind, database_url))
    except ImportError_ as exc:
        raise click.ClickException(f"{path}: {exc}") from None


@click.group()
def references() -> None:
    """Conversation references (what a Teams bot stores when it is added to a conversation)."""


@references.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_database_option
def references_import(file: Path, database_url: str | None) -> None:
    """Insert or update conversation references from a JSON file (a list of objects)."""
    click.echo(json.dumps({"imported": _import(file, database_url, "references")}))


@click.group()
def items() -> None:
    """Digest items read by the built-in source."""


@items.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_database_option
def items_import(file: Path, database_url: str | None) -> None:
    """Insert digest items from a JSON file (a list of objects)."""
    click.echo(json.dumps({"imported": _import(file, database_url, "items")}))
