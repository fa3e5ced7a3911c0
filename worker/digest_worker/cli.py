"""`digestctl worker`, `enqueue`, `references import`, `items import`.

Only click and the env contract are imported at module level: the operator image lists these commands without the
worker's runtime libraries, which are imported when a command runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from digest_worker import contract

EXIT_INVALID = 1


@click.command()
def worker() -> None:
    """Consume digest requests and post them to Teams (configured by DIGEST_* environment variables)."""
    from digest_worker import logs
    from digest_worker.config import ConfigError, load

    try:
        config = load(os.environ)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    logs.setup(config.log_level)
    from digest_worker.app import serve

    sys.exit(asyncio.run(serve(config)))


def _connection(connection_string: str | None, namespace: str | None) -> Any:
    from azure.servicebus.aio import ServiceBusClient

    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string)
    if namespace:
        from azure.identity.aio import DefaultAzureCredential

        return ServiceBusClient(namespace, DefaultAzureCredential())
    raise click.UsageError(f"--connection-string (or {contract.SERVICEBUS_CONNECTION_STRING}) or --namespace "
                           f"(or {contract.SERVICEBUS_NAMESPACE}) is required")


@click.command()
@click.option("--queue", envvar=contract.SERVICEBUS_QUEUE, required=True, help="Queue to send to.")
@click.option("--connection-string", envvar=contract.SERVICEBUS_CONNECTION_STRING, help="Connection string.")
@click.option("--namespace", envvar=contract.SERVICEBUS_NAMESPACE, help="Namespace FQDN (DefaultAzureCredential).")
@click.option("-n", "--count", type=click.IntRange(0, 1_000_000), default=1, show_default=True,
              help="Well-formed requests to send.")
@click.option("--poison", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Poison messages mixed in (cycling through every kind).")
@click.option("-c", "--conversation-id", "conversations", multiple=True, required=True,
              help="Conversation(s) to address, round robin.")
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True)
@click.option("--max-items", type=click.IntRange(1, 50), default=10, show_default=True)
@click.option("--owner", default=None, help="Only items of this owner.")
@click.option("--prefix", default="req", show_default=True, help="Request id prefix (ids are <prefix>-<n>).")
def enqueue(queue: str, connection_string: str | None, namespace: str | None, count: int, poison: int,
            conversations: tuple[str, ...], days: int, max_items: int, owner: str | None, prefix: str) -> None:
    """Send digest requests (optionally with poison ones) for smoke and load tests."""
    from digest_worker.producer import POISON_KINDS

    async def send() -> int:
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties

        from digest_worker.producer import poison as poison_body
        from digest_worker.producer import request_body

        def _poison(k: int) -> Any:
            kind = POISON_KINDS[k % len(POISON_KINDS)]
            rid = f"{prefix}-poison-{k}"
            return AmqpAnnotatedMessage(**poison_body(kind, rid, conversations[0]),
                                        properties=AmqpMessageProperties(message_id=rid))

        messages: list[Any] = []
        every = (count // poison) if poison else 0
        p = 0
        for i in range(count):
            rid = f"{prefix}-{i}"
            messages.append(ServiceBusMessage(request_body(rid, conversations[i % len(conversations)], days=days,
                                                           max_items=max_items, owner=owner),
                                              message_id=rid, content_type="application/json"))
            if poison and p < poison and (every == 0 or (i + 1) % max(every, 1) == 0):
                messages.append(_poison(p))
                p += 1
        while p < poison:
            messages.append(_poison(p))
            p += 1

        async with _connection(connection_string, namespace) as client, client.get_queue_sender(queue) as sender:
            batch = await sender.create_message_batch()
            for message in messages:
                try:
                    batch.add_message(message)
                except ValueError:  # full: send and start a new batch
                    await sender.send_messages(batch)
                    batch = await sender.create_message_batch()
                    batch.add_message(message)
            if len(batch):
                await sender.send_messages(batch)
        return len(messages)

    sent = asyncio.run(send())
    click.echo(json.dumps({"queue": queue, "sent": sent, "requests": count, "poison": poison}))


def _database_option(f: Any) -> Any:
    return click.option("--database-url", envvar=contract.DATABASE_URL, default=None,
                        help="SQLAlchemy URL (default: the worker's SQLite file).")(f)


def _import(path: Path, database_url: str | None, kind: str) -> int:
    from digest_worker.config import DEFAULT_DATABASE_URL, async_database_url
    from digest_worker.db.store import Store
    from digest_worker.imports import ImportError_, parse_items, parse_references

    text = path.read_text(encoding="utf-8")
    try:
        rows: Any = parse_references(text) if kind == "references" else parse_items(text)
    except ImportError_ as exc:
        raise click.ClickException(f"{path}: {exc}") from None

    async def run() -> int:
        store = Store.open(async_database_url(database_url or DEFAULT_DATABASE_URL))
        try:
            await store.upgrade()
            return await (store.put_references(rows) if kind == "references" else store.put_items(rows))
        finally:
            await store.close()

    return asyncio.run(run())


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
