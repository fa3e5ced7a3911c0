"""Where the bot's token goes, and where the worker's secrets come from (real worker, emulator, local connector).

- A conversation reference whose serviceUrl is not in DIGEST_TEAMS_SERVICE_URLS (plain http under the defaults, or
  a host not listed) gets no request at all, so no bearer token; the message is dead-lettered at once with
  `Permanent.TeamsServiceUrlNotAllowed` naming the host, the ledger records it failed, and the reference stays
  active (fixing the allow-list and requeueing posts it).
- A connector that answers with a redirect does not get its target a request (nor the token, nor the card).
- The worker (`python -m digest_worker`) and `digestctl dlq` run with the secrets only in files (`*_FILE`), and no
  secret value appears in their output.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest_api import contract
from digest_cli import main
from digest_worker.db.store import StoredReference
from tests.worker.fakes import FakeConnector, Reply
from tests.worker.harness import APP_ID, CONVERSATIONS, SECRET, Stack, metric, request, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONV = CONVERSATIONS[0]
FOREIGN = "19:foreign@thread.tacv2"


@pytest.fixture
def foreign() -> Iterator[FakeConnector]:
    """A second connector on loopback: a host:port the allow-list does not name."""
    fake = FakeConnector().start()
    try:
        yield fake
    finally:
        fake.stop()


async def _reference(stack: Stack, conversation: str, service_url: str) -> None:
    async with stack.store() as store:
        await store.put_references([StoredReference(
            conversation, service_url, "tenant-1", f"28:{APP_ID}", "msteams",
            {"channelId": "msteams", "serviceUrl": service_url, "conversation": {"id": conversation},
             "bot": {"id": f"28:{APP_ID}", "name": "digest"}}, True)])


@pytest.mark.parametrize("case", ["foreign-host", "http-under-defaults"])
async def test_service_url_outside_the_allow_list_gets_no_token_and_is_dead_lettered_once(
        stack: Stack, foreign: FakeConnector, case: str) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    if case == "foreign-host":  # allow-list: the local connector only (the harness); the reference: another port
        target, overrides = foreign, {}
        await _reference(stack, FOREIGN, foreign.url)
        await stack.send("digests", request("bad-1", FOREIGN), request("good-1", CONV))
    else:  # no allow-list: the Bot Framework's https hosts; the local connector is http on 127.0.0.1
        target, overrides = stack.connector, {contract.TEAMS_SERVICE_URLS: ""}
        await _reference(stack, FOREIGN, stack.connector.url)
        await stack.send("digests", request("bad-1", FOREIGN))
    async with stack.worker(**overrides) as app:
        await stack.settled(app, 2 if case == "foreign-host" else 1)
        dead_lettered = metric(app, "digest_worker_messages_total", outcome="dead_lettered",
                               reason="Permanent.TeamsServiceUrlNotAllowed")
    assert target.attempts(FOREIGN) == [] and target.posts == []  # not one request: no token, no card
    dead = await stack.dead_letters("digests")
    assert set(dead) == {"bad-1"} and dead_lettered == 1
    reason, description = dead["bad-1"]
    assert reason == "Permanent.TeamsServiceUrlNotAllowed"
    port = foreign._server.port if case == "foreign-host" else stack.connector._server.port
    assert description is not None and description.startswith(
        f"service URL host '127.0.0.1' (http://127.0.0.1:{port}) is not allowed")
    async with stack.store() as store:
        row = await store.request_row("bad-1")
        reference = await store.reference(FOREIGN)
    assert row is not None and row["state"] == "failed" and row["attempts"] == 1
    assert reference is not None and reference.active  # the reference may be right and the allow-list wrong
    if case == "foreign-host":  # the allowed connector still gets its post, with the token
        (post,) = stack.connector.delivered(CONV)
        assert post.headers["Authorization"].startswith("Bearer token-")


async def test_a_redirect_from_the_connector_is_not_followed(stack: Stack, foreign: FakeConnector) -> None:
    await stack.seed([("ana", "Item", 1.0, 1)])
    location = f"{foreign.url}v3/conversations/{CONV}/activities"
    stack.connector.script(CONV, Reply(307, {}, {"Location": location}))
    await stack.send("digests", request("moved-1"))
    async with stack.worker() as app:
        await stack.settled(app, 1)
    assert len(stack.connector.attempts(CONV)) == 1
    assert foreign.posts == []  # aiohttp would have re-sent the POST (307 keeps method and body) to the target
    assert (await stack.dead_letters("digests"))["moved-1"][0] == "Permanent.TeamsTemporaryRedirect"


async def test_worker_and_dlq_cli_with_secrets_only_in_files(stack: Stack, foreign: FakeConnector,
                                                             tmp_path: Path) -> None:
    """The operator mounts the Secrets as files and sets only the *_FILE variables: the worker process connects to
    Service Bus, gets a token with the password and records in the database, all read from files; `digestctl dlq`
    reads the connection string the same way. No secret value reaches the logs (at DEBUG) or the CLI output."""
    await stack.seed([("ana", "Item", 1.0, 1)])
    await _reference(stack, FOREIGN, foreign.url)
    await stack.send("digests", request("file-1"), request("file-2", FOREIGN))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    env = stack.env()
    values = {name: env.pop(name) for name in contract.SECRET_VARIABLES}
    for name, value in values.items():
        (secrets_dir / name).write_text(value + "\n")  # as a Secret's key mounted as a file (kubectl adds no \n)
        env[name + "_FILE"] = str(secrets_dir / name)
    full = {key: value for key, value in os.environ.items() if key not in contract.SECRET_VARIABLES}
    full |= {**env, contract.LOG_LEVEL: "DEBUG",
             "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "digest_worker"], env=full, cwd=ROOT,  # noqa: ASYNC220
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_until(lambda: len(stack.connector.delivered(CONV)) == 1, within=60, what="the post")
        await wait_until(lambda: _dead_letter_count(stack), within=30, what="the dead-letter")
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, log_path.read_text()
    (post,) = stack.connector.delivered(CONV)
    # the token endpoint issues `token-N` only for the right client secret: the password came from its file
    assert post.headers["Authorization"].startswith("Bearer token-")
    async with stack.store() as store:  # the ledger is the database the URL file names
        row = await store.request_row("file-1")
    assert row is not None and row["state"] == "sent"

    result = CliRunner().invoke(main, ["dlq", "list", "--queue", "digests", "-o", "json"], env={
        contract.SERVICEBUS_CONNECTION_STRING: None,
        contract.SERVICEBUS_CONNECTION_STRING_FILE: str(secrets_dir / contract.SERVICEBUS_CONNECTION_STRING)})
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(m["messageId"], m["reason"]) for m in listed] == [("file-2", "Permanent.TeamsServiceUrlNotAllowed")]

    output = log_path.read_text() + result.output
    assert "digest posted" in output
    shared_key = values[contract.SERVICEBUS_CONNECTION_STRING].split("SharedAccessKey=")[1].split(";")[0]
    for leaked in (SECRET, shared_key, values[contract.SERVICEBUS_CONNECTION_STRING],
                   values[contract.DATABASE_URL]):
        assert leaked not in output


def _dead_letter_count(stack: Stack) -> object:
    async def count() -> bool:
        return bool(await stack.dead_letters("digests"))

    return count()
