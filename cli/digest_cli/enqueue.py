"""`digestctl enqueue`: send digest requests, and poison ones, for smoke and load tests."""

from __future__ import annotations

import asyncio
import json

import click

from digest_api import contract


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
    from digest_worker import producer

    if not connection_string and not namespace:
        raise click.UsageError(f"--connection-string (or {contract.SERVICEBUS_CONNECTION_STRING}) or --namespace "
                               f"(or {contract.SERVICEBUS_NAMESPACE}) is required")
    messages = producer.messages(count, poison, conversations, days=days, max_items=max_items, owner=owner,
                                 prefix=prefix)
    sent = asyncio.run(producer.send(producer.connect(connection_string, namespace), queue, messages))
    click.echo(json.dumps({"queue": queue, "sent": sent, "requests": count, "poison": poison}))
