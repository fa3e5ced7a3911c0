"""What one request/response round trip costs a server process on this machine, whatever the server does.

A bare uvloop echo server (no AMQP, no parsing: each read is answered with 40 bytes) in its own process, and a client
that does `--work` iterations of a Python loop between round trips (3,000 ≈ 100 µs, about what the SDK spends per
completed message). Prints the server's and the client's CPU per round trip and their ratio: the floor under
`bench.emulator_throughput`'s receive + complete ratio, where the SDK waits for an echo of every completion.

    uv run python -m bench.wakeup_floor [--round-trips 20000] [--work 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from typing import cast

from bench.report import cpu_seconds, print_result
from tests.support.kubeconfig import free_port


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"x" * 40)


def _serve(port: int) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    loop.run_until_complete(loop.create_server(_Echo, "127.0.0.1", port))
    loop.run_forever()


def _busy(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def run(round_trips: int, work: int) -> dict[str, float]:
    port = free_port()
    pid = os.fork()
    if pid == 0:  # the server process
        try:
            _serve(port)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
        for _ in range(round_trips):
            client.sendall(b"y" * 30)
            client.recv(100)
            _busy(work)
        server = (cpu_seconds(pid) - server_cpu) / round_trips
        own = (time.process_time() - client_cpu) / round_trips
        client.close()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return {"round_trips": round_trips, "server_cpu_us_per_round_trip": round(server * 1e6, 1),
            "client_cpu_us_per_round_trip": round(own * 1e6, 1), "server_cpu_vs_client_cpu": round(server / own, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--work", type=int, default=3_000)
    args = parser.parse_args()
    result = run(args.round_trips, args.work)
    print_result(result)


if __name__ == "__main__":
    main()
