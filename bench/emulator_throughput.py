"""Emulator throughput: one SDK sender (batches of 100) and one SDK receiver (receive + complete) on loopback.

Prints messages per second for each phase and the ratio of the emulator's CPU time per message to the SDK
client's CPU time per message, both measured in the same run (goal: the server costs at most a quarter of the
client, i.e. the SDK is the bottleneck). The emulator runs as a `digestctl emulator` process so that its CPU time is
its own (read from /proc).

The receive phase is also run against a *floor* server (`bench.emulator_floor`): the emulator with every completion
answered by a pre-shaped echo before any broker work. Its CPU per message is what one event costs the process (the
wake-up, the read and the write of a round trip) whatever the broker does; the difference to the emulator's is the
broker's own share.

    uv run python -m bench.emulator_throughput [--messages 20000] [--prefetch 0]
    uv run python -m bench.emulator_throughput --steady 100000     # memory over a long steady stream
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage

from bench.report import cpu_seconds, memory_mib, print_result
from tests.support.kubeconfig import free_port


def _phases(command: list[str], messages: int, prefetch: int) -> dict[str, float]:
    """Send `messages` in batches of 100, then receive + complete them, against the server `command` starts."""
    server = subprocess.Popen([*command, "--port", str(free_port()), "--queue", "bench"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        connection_string = server.stdout.readline().strip()
        body = "x" * 256
        with ServiceBusClient.from_connection_string(connection_string) as client:
            with client.get_queue_sender("bench") as sender:
                sender.send_messages(ServiceBusMessage("warm-up"))
                cpu_server, cpu_client, started = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
                for _ in range(messages // 100):
                    batch = sender.create_message_batch()
                    for _ in range(100):
                        batch.add_message(ServiceBusMessage(body))
                    sender.send_messages(batch)
                send_wall = time.perf_counter() - started
                send_server, send_client = cpu_seconds(server.pid) - cpu_server, time.process_time() - cpu_client
            rss_after_send = memory_mib(server.pid)
            with client.get_queue_receiver("bench", prefetch_count=prefetch, max_wait_time=5) as receiver:
                cpu_server, cpu_client, started = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
                received = 0
                while received < messages + 1:
                    # ask for what is left: with prefetch the SDK waits max_wait_time for a batch it cannot fill
                    wanted = min(100, messages + 1 - received)
                    batch_got = receiver.receive_messages(max_message_count=wanted, max_wait_time=5)
                    if not batch_got:
                        break
                    for message in batch_got:
                        receiver.complete_message(message)
                    received += len(batch_got)
                receive_wall = time.perf_counter() - started
                recv_server, recv_client = cpu_seconds(server.pid) - cpu_server, time.process_time() - cpu_client
        rss_end = memory_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {"send_wall": send_wall, "send_server": send_server, "send_client": send_client,
            "receive_wall": receive_wall, "receive_server": recv_server, "receive_client": recv_client,
            "received": received, "rss_after_send": rss_after_send, "rss_end": rss_end}


def run(messages: int, prefetch: int) -> dict[str, float]:
    emulator = _phases([str(Path(sys.executable).parent / "digestctl"), "emulator"], messages, prefetch)
    floor = _phases([sys.executable, "-m", "bench.emulator_floor"], messages, prefetch)
    received = emulator["received"]

    def per_message_us(seconds: float) -> float:
        return round(seconds / received * 1e6, 1)

    return {
        "messages": messages,
        "send_msgs_per_s": round(messages / emulator["send_wall"]),
        "send_server_cpu_vs_client_cpu": round(emulator["send_server"] / max(emulator["send_client"], 1e-9), 3),
        "receive_complete_msgs_per_s": round(received / emulator["receive_wall"]),
        "receive_server_cpu_vs_client_cpu": round(emulator["receive_server"] / max(emulator["receive_client"], 1e-9),
                                                  3),
        "receive_server_cpu_us_per_msg": per_message_us(emulator["receive_server"]),
        "receive_client_cpu_us_per_msg": per_message_us(emulator["receive_client"]),
        "floor_receive_server_cpu_vs_client_cpu": round(floor["receive_server"] / max(floor["receive_client"], 1e-9),
                                                        3),
        "floor_receive_server_cpu_us_per_msg": round(floor["receive_server"] / max(floor["received"], 1) * 1e6, 1),
        "received": received,
        "server_rss_mib_after_send": round(emulator["rss_after_send"], 1),
        "server_rss_mib_at_end": round(emulator["rss_end"], 1),
    }


def steady(messages: int, window: int = 1000) -> dict[str, float]:
    """A steady stream: send a window, receive and complete it, repeat; the server's RSS is sampled as it goes
    (memory must follow what is held, not how many messages went through)."""
    digestctl = Path(sys.executable).parent / "digestctl"
    server = subprocess.Popen([str(digestctl), "emulator", "--port", str(free_port()), "--queue", "bench"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[float] = []
    try:
        assert server.stdout is not None
        connection_string = server.stdout.readline().strip()
        with ServiceBusClient.from_connection_string(connection_string) as client, \
                client.get_queue_sender("bench") as sender, \
                client.get_queue_receiver("bench", max_wait_time=5) as receiver:
            done = 0
            while done < messages:
                for _ in range(window // 100):
                    batch = sender.create_message_batch()
                    for _ in range(100):
                        batch.add_message(ServiceBusMessage("x" * 256))
                    sender.send_messages(batch)
                got = 0
                while got < window:
                    for message in receiver.receive_messages(max_message_count=100, max_wait_time=5):
                        receiver.complete_message(message)
                        got += 1
                done += window
                if done % (messages // 10) == 0:
                    samples.append(memory_mib(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {"messages_through": messages, "server_rss_mib_at_10pct": round(samples[0], 1),
            "server_rss_mib_at_end": round(samples[-1], 1),
            "growth_mib_per_10k_after_warmup": round((samples[-1] - samples[0]) / max(len(samples) - 1, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=0)
    parser.add_argument("--steady", type=int, default=0, metavar="N",
                        help="instead: stream N messages through in windows of 1,000 and report the server's RSS")
    args = parser.parse_args()
    result = steady(args.steady) if args.steady else run(args.messages, args.prefetch)
    print_result(result)


if __name__ == "__main__":
    main()
