"""The local sample pipeline: `manifests/samples/digest_v1alpha1_digestpipeline_local.yaml` pointed at the host
services (emulator, local Teams, PostgreSQL), its Secrets, and the conversation references and digest items the
worker reads, seeded into PostgreSQL as a Teams bot would have stored them."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import yaml

from digest_cluster import services
from digest_cluster.layout import NODE_IP
from digest_cluster.services import Emulator, Postgres, Teams

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "digest_v1alpha1_digestpipeline_local.yaml"
TENANT = "00000000-0000-0000-0000-00000000cafe"


def _secret(name: str, namespace: str, key: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "data": {key: base64.b64encode(value.encode()).decode()}}


def secrets(namespace: str, emulator: Emulator, teams: Teams, postgres: Postgres) -> list[dict[str, Any]]:
    """The Secrets the sample names: Service Bus connection string, bot password, database URL."""
    return [
        _secret("servicebus", namespace, "connectionString", emulator.connection_string),
        _secret("teams-bot", namespace, "password", teams.password),
        _secret("digest-db", namespace, "url", postgres.url),
    ]


def pipeline(name: str, namespace: str, worker_image: str, teams: Teams, *, queue: str, max_delivery: int,
             monitor_schedule: str | None = None, park_queue: str | None = None,
             **spec: Any) -> dict[str, Any]:
    """The local sample with this image, queue and the local Teams' identity and token endpoint; the database is
    PostgreSQL (Secret `digest-db`), so every replica shares the ledger and the conversation references."""
    document: dict[str, Any] = copy.deepcopy(yaml.safe_load(SAMPLE.read_text()))
    document["metadata"] = {"name": name, "namespace": namespace}
    body = document["spec"]
    body["image"] = worker_image
    body["serviceBus"] |= {"queue": queue, "maxDeliveryCount": max_delivery}
    # the local connector is plain http on the node IP: outside the worker's default (Bot Framework, https) allow-list
    body["teams"] |= {"appId": teams.app_id, "loginUrl": teams.login_url, "serviceUrls": [teams.connector_url]}
    body["database"] = {"urlSecretRef": {"name": "digest-db", "key": "url"}}
    # the host services listen on the node IP, on ports the NetworkPolicy's defaults do not open (PostgreSQL is 5432)
    ports = [services.EMULATOR_PORT, services.TEAMS_CONNECTOR_PORT, services.TEAMS_TOKEN_PORT]
    body["networkPolicy"] = {"egress": [{"to": [{"ipBlock": {"cidr": f"{NODE_IP}/32"}}],
                                         "ports": [{"port": port} for port in ports]}]}
    if monitor_schedule is not None:
        dead_letter: dict[str, Any] = {"monitor": {"schedule": monitor_schedule}}
        if park_queue is not None:
            dead_letter["requeuePolicy"] = {"parkQueue": park_queue, "rules": [
                {"name": "poison", "match": {"reason": "Permanent.*"}, "action": "Park"}]}
        body["deadLetter"] = dead_letter
    body.update(spec)
    return document


def seed(postgres: Postgres, teams: Teams, conversations: list[str], items_per_owner: int = 5) -> None:
    """Conversation references (serviceUrl = the local connector) and a few digest items, via the worker's store."""
    from digest_worker.config import async_database_url
    from digest_worker.db.store import Store
    from digest_worker.imports import parse_items, parse_references

    now = datetime.datetime.now(datetime.UTC)
    references = parse_references(json.dumps([
        {"conversation_id": c, "service_url": teams.connector_url, "tenant_id": TENANT, "bot_id": teams.app_id,
         "bot_name": "digest-bot"} for c in conversations]))
    items = parse_items(json.dumps([
        {"owner": "platform", "title": f"Release note {i}", "summary": f"What changed in build {i}",
         "url": f"https://example.invalid/notes/{i}", "score": float(i),
         "created_at": (now - datetime.timedelta(hours=i)).isoformat()} for i in range(1, items_per_owner + 1)]))

    async def run() -> None:
        store = Store.open(async_database_url(postgres.host_url))
        try:
            await store.upgrade()
            await store.put_references(references)
            await store.put_items(items)
        finally:
            await store.close()

    asyncio.run(run())
