"""`digestctl enqueue`, `references import`, `items import`, and the operator CLI not importing the worker's
libraries."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from digest_cli import main
from digest_worker.producer import POISON_KINDS
from tests.worker.harness import CONVERSATIONS, Stack, metric


def test_operator_cli_imports_no_worker_runtime_library() -> None:
    code = ("import sys, digest_cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'azure', 'botbuilder', 'botframework', "
            "'sqlalchemy', 'alembic', 'msal', 'asyncpg', 'aiosqlite'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_imports_then_enqueue_with_poison_then_worker(stack: Stack, tmp_path: Path) -> None:
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([{"conversation_id": c, "service_url": stack.connector.url, "tenant_id": "t",
                                 "bot_id": "28:bot"} for c in CONVERSATIONS[:2]]))
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"owner": "ana", "title": f"Item {i}", "summary": "s", "score": i,
                                  "url": f"https://x/{i}"} for i in range(3)]))
    runner = CliRunner()
    for args in (["references", "import", str(refs)], ["items", "import", str(items)]):
        result = await asyncio.to_thread(runner.invoke, main, [*args, "--database-url", stack.database_url])
        assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"imported": 3}

    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversation_id": "c"}]')
    result = await asyncio.to_thread(runner.invoke, main, ["references", "import", str(bad), "--database-url",
                                                          stack.database_url])
    assert result.exit_code == 1 and "[0.service_url]: Field required" in result.output

    args = ["enqueue", "--queue", "digests", "-n", "4", "--poison", str(len(POISON_KINDS)), "-c", CONVERSATIONS[0],
            "-c", CONVERSATIONS[1], "--prefix", "smoke"]
    result = await asyncio.to_thread(runner.invoke, main, args,
                                     env={"DIGEST_SERVICEBUS_CONNECTION_STRING": stack.emulator.connection_string()})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"queue": "digests", "sent": 4 + len(POISON_KINDS), "requests": 4,
                                         "poison": len(POISON_KINDS)}
    async with stack.worker() as app:
        await stack.settled(app, 4 + len(POISON_KINDS))
        assert metric(app, "digest_worker_messages_total", outcome="completed", reason="delivered") == 4
    dead = await stack.dead_letters("digests")
    assert sorted(dead) == sorted(f"smoke-poison-{k}" for k in range(len(POISON_KINDS)))
    assert {reason for reason, _ in dead.values()} == {"Permanent.InvalidMessage"}
    assert len(stack.connector.delivered(CONVERSATIONS[0])) == 2
    assert len(stack.connector.delivered(CONVERSATIONS[1])) == 2
