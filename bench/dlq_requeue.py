"""DLQ requeue: the naive loop versus `digestctl dlq requeue`, in one run, on the same 5,000 messages.

Fills a dead-letter queue with 5,000 messages (mixed sizes, log-uniform 200 B to 50 KB) and requeues it
(a) the naive way — receive 10, send those 10 in one call, complete them one by one, repeat — and, on a fresh
emulator with the same messages, (b) with the toolkit (`ops.requeue`, what `digestctl dlq requeue --yes` runs).
Prints messages per second of each, the ratio b/a (goal >= 3) and verifies that both lost 0 and duplicated 0
messages (by message id and body hash).
The emulator runs as a `digestctl emulator` process (one per method), so client and server do not share an
interpreter. The toolkit runs with the CLI's default lanes (`--parallel`: 2 forked lanes where two CPUs are usable);
its run is CPU-bound and the naive one is not, so other load on the machine lowers the ratio: run it several times
and compare within a run (results and the time split: bench/README.md).

    uv run python -m bench.dlq_requeue [--messages 5000] [--seed 7] [--lanes N]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from bench.report import print_result
from digest_dlq import bus, ops
from digest_dlq.lanes import auto_count
from digest_dlq.select import Selection
from tests.support.dlqdata import send_in_batches
from tests.support.kubeconfig import free_port

QUEUE_FLAGS = ["naive:LockDuration=PT60S,MaxDeliveryCount=10", "toolkit:LockDuration=PT60S,MaxDeliveryCount=10"]


def messages(count: int, seed: int) -> list[ServiceBusMessage]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = int(200 * (250 ** rng.random()))  # log-uniform 200 B .. 50 KB
        out.append(ServiceBusMessage(rng.randbytes(size), message_id=f"b-{i:05d}",
                                     application_properties={"i": i, "tenant": f"t{i % 9}"}))
    return out


def fill(connection_string: str, queue: str, count: int, seed: int) -> dict[str, str]:
    """Send and dead-letter `count` messages; returns message id → body hash."""
    expected: dict[str, str] = {}
    with ServiceBusClient.from_connection_string(connection_string) as client:
        with client.get_queue_sender(queue) as sender:
            send_in_batches(sender, messages(count, seed))
        with client.get_queue_receiver(queue, prefetch_count=0) as receiver:
            while len(expected) < count:
                got = receiver.receive_messages(max_message_count=250, max_wait_time=5)
                if not got:
                    raise RuntimeError(f"only {len(expected)} of {count} arrived in {queue}")
                for received in got:
                    expected[str(received.message_id)] = bus.from_received(received).body_hash()
                    receiver.dead_letter_message(received, reason="Transient.Exhausted.Http",
                                                 error_description="bench")
    return expected


def naive(connection_string: str, queue: str) -> int:
    """Receive 10, send those 10 in one call, complete one by one."""
    moved = 0
    with ServiceBusClient.from_connection_string(connection_string) as client, \
            client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0) as dlq, \
            client.get_queue_sender(queue) as sender:
        while True:
            got = dlq.receive_messages(max_message_count=10, max_wait_time=2)
            if not got:
                return moved
            copies = [ServiceBusMessage(b"".join(m.body), message_id=str(m.message_id),
                                        application_properties={k: v for k, v in
                                                                (m.application_properties or {}).items()
                                                                if k not in (b"DeadLetterReason",
                                                                             b"DeadLetterErrorDescription")})
                      for m in got]
            sender.send_messages(copies)
            for m in got:
                dlq.complete_message(m)
            moved += len(got)


def toolkit(connection_string: str, queue: str, lanes: int) -> int:
    ctx = ops.Context(bus.Endpoint(connection_string=connection_string), queue, {})
    outcome = ops.requeue(ctx, Selection(), ops.RequeueOptions(lanes=lanes), ops.utcnow())
    if not outcome.clean:
        raise RuntimeError(f"toolkit run incomplete: {outcome.summary()}")
    return len(outcome.requeued)


def verify(connection_string: str, queue: str, expected: dict[str, str]) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    changed = 0
    dead = 0
    with ServiceBusClient.from_connection_string(connection_string) as client:
        for message in bus.peek_all(client, queue, dead_letter=False):
            original = str(message.original_message_id)
            seen[original] += 1
            changed += expected.get(original) != message.body_hash()
        dead = sum(1 for _ in bus.peek_all(client, queue))
    return {"lost": len(set(expected) - set(seen)) , "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "body_changed": changed, "left_in_dlq": dead}


def _one(method: str, count: int, seed: int, lanes: int) -> tuple[int, float, dict[str, Any]]:
    """A fresh emulator process per method, so neither run inherits the other's state."""
    digestctl = Path(sys.executable).parent / "digestctl"
    args = [str(digestctl), "emulator", "--port", str(free_port())]
    for flag in QUEUE_FLAGS:
        args += ["--queue", flag]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        cs = server.stdout.readline().strip()
        expected = fill(cs, method, count, seed)
        started = time.perf_counter()
        moved = naive(cs, method) if method == "naive" else toolkit(cs, method, lanes)
        wall = time.perf_counter() - started
        return moved, wall, verify(cs, method, expected)
    finally:
        server.terminate()
        server.wait(timeout=20)


def run(count: int, seed: int, lanes: int) -> dict[str, Any]:
    moved_a, wall_a, check_a = _one("naive", count, seed, lanes)
    moved_b, wall_b, check_b = _one("toolkit", count, seed, lanes)
    rate_a, rate_b = moved_a / wall_a, moved_b / wall_b
    return {
        "messages": count,
        "toolkit_lanes": lanes,
        "naive_msgs_per_s": round(rate_a, 1),
        "toolkit_msgs_per_s": round(rate_b, 1),
        "ratio_toolkit_vs_naive": round(rate_b / rate_a, 2),
        "naive_seconds": round(wall_a, 2), "toolkit_seconds": round(wall_b, 2),
        **{f"naive_{k}": v for k, v in check_a.items()},
        **{f"toolkit_{k}": v for k, v in check_b.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lanes", type=int, default=auto_count(),
                        help="the toolkit's lanes (--parallel; default: the CLI's, %(default)s here)")
    parsed = parser.parse_args()
    result = run(parsed.messages, parsed.seed, parsed.lanes)
    print_result(result)
    if any(result[k] for k in result if k.endswith(("_lost", "_duplicated", "_body_changed"))):
        sys.exit(1)


if __name__ == "__main__":
    main()
