"""The worker as a process (`python -m digest_worker`): SIGTERM mid-batch loses nothing; SIGKILL mid-flight leads to
one redelivery and exactly one post; a bad configuration exits non-zero naming every problem."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.kubeconfig import free_port
from tests.worker.harness import SECRET, Stack, request, wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@asynccontextmanager
async def worker_process(stack: Stack, queue: str, log_dir: Path, **env: str) -> AsyncIterator[WorkerProcess]:
    port = free_port()
    full_env = {**os.environ, **stack.env(queue, DIGEST_METRICS_PORT=str(port), **env),
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log_path = log_dir / f"worker-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "digest_worker"], env=full_env, cwd=ROOT,  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield WorkerProcess(proc, port, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait, 30)


async def gauge(port: int, name: str) -> float | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def exit_code(proc: subprocess.Popen[bytes], within: float = 60) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.wait), within)


@pytest.mark.parametrize(("drain", "posted_before_restart"), [("15", 4), ("1", 0)])
async def test_sigterm_mid_batch_loses_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               drain: str, posted_before_restart: int) -> None:
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "3")
    await stack.seed([("ana", "Item", 1.0, 1)])
    ids = [f"batch-{i}" for i in range(8)]
    await stack.send("slow", *[request(i) for i in ids])
    async with worker_process(stack, "slow", tmp_path, DIGEST_SOURCE="tests.worker.sources:slow",
                              DIGEST_CONCURRENCY="4", DIGEST_DRAIN_SECONDS=drain) as worker:
        await wait_until(lambda: _is(gauge(worker.port, "digest_worker_in_flight"), 4.0), within=30,
                         what="4 in flight")
        worker.proc.send_signal(signal.SIGTERM)
        assert await exit_code(worker.proc) == 0
        log = worker.log()
    assert '"message": "stopping: no new messages; draining in-flight work"' in log
    assert '"request_id": "batch-' in log and '"correlation_id": "corr-batch-' in log
    # no secret in the logs: neither the Teams password, nor the SAS key of the connection string, nor the token
    assert SECRET not in log and "SharedAccessKey" not in log and "SAS_KEY_VALUE" not in log
    assert "Bearer" not in log and "token-1" not in log
    assert len(stack.connector.delivered()) == posted_before_restart
    remaining = await stack.peek("slow")
    assert len(remaining) == 8 - posted_before_restart
    # nothing lost: another worker delivers the rest, each request exactly once
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "0")
    async with stack.worker("slow", DIGEST_SOURCE="tests.worker.sources:slow", DIGEST_CONCURRENCY="8"):
        await wait_until(lambda: len(stack.connector.delivered()) == 8, within=30, what="all 8 delivered")
    bodies = [p.json["attachments"][0]["content"] for p in stack.connector.delivered()]
    assert len(bodies) == 8
    async with stack.store() as store:
        rows = [await store.request_row(i) for i in ids]
    assert all(r is not None and r["state"] == "sent" for r in rows)
    assert len({r["activity_id"] for r in rows if r}) == 8
    assert await stack.dead_letters("slow") == {}


async def _is(value: Awaitable[float | None], expected: float) -> bool:
    return await value == expected


async def test_sigkill_mid_flight_is_redelivered_and_posted_once(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "4")
    await stack.seed([("ana", "Item", 1.0, 1)])
    await stack.send("digests", request("killed-1"))
    async with worker_process(stack, "digests", tmp_path, DIGEST_SOURCE="tests.worker.sources:slow") as worker:
        await wait_until(lambda: _is(gauge(worker.port, "digest_worker_in_flight"), 1.0), within=30, what="in flight")
        async with stack.store() as store:  # the ledger has it as received: the digest is being built
            await wait_until(lambda: store.request_row("killed-1"), what="the ledger row")
        worker.proc.send_signal(signal.SIGKILL)
        assert await exit_code(worker.proc) == -signal.SIGKILL
    assert stack.connector.posts == []
    monkeypatch.setenv("DIGEST_TEST_SOURCE_DELAY", "0")
    async with stack.worker("digests", DIGEST_SOURCE="tests.worker.sources:slow") as app:
        await stack.settled(app, 1, within=30)
    assert len(stack.connector.delivered()) == 1
    async with stack.store() as store:
        row = await store.request_row("killed-1")
    assert row is not None and row["state"] == "sent" and row["attempts"] == 2
    assert await stack.peek("digests") == []
    assert await stack.dead_letters("digests") == {}


def test_bad_configuration_exits_non_zero_listing_every_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update({"DIGEST_CONCURRENCY": "zero", "DIGEST_TEAMS_APP_TYPE": "SingleTenant",
                "DIGEST_TEAMS_APP_PASSWORD": "do-not-print-me"})
    done = subprocess.run([sys.executable, "-m", "digest_worker"], env=env, capture_output=True, timeout=60,
                          cwd=tmp_path, check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    for name in ("DIGEST_SERVICEBUS_QUEUE", "DIGEST_SERVICEBUS_NAMESPACE", "DIGEST_CONCURRENCY='zero'",
                 "DIGEST_TEAMS_APP_ID", "DIGEST_TEAMS_TENANT_ID"):
        assert name in err
    assert "do-not-print-me" not in err
