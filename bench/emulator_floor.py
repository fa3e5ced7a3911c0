"""The floor of the emulator's receive + complete cost: the emulator with every completion the SDK sends answered
at once by a pre-shaped `accepted` echo, without any broker work (the message stays locked). What remains per
message is the cost of the event itself: waking up, reading the frame, writing the echo. A measurement aid for
`bench.emulator_throughput`, never a server to use.

    python -m bench.emulator_floor --port PORT --queue NAME
"""

from __future__ import annotations

import argparse
import signal
import threading

from digest_sbemulator import frames
from digest_sbemulator.config import build_config
from digest_sbemulator.connection import Connection
from digest_sbemulator.server import EmulatorServer


class _FloorConnection(Connection):
    def data_received(self, data: bytes) -> None:
        match = frames.SDK_COMPLETE(data) if not self.buffer else None
        if match is not None and self.transport is not None:
            self.transport.write(frames.accepted_echo(*match.groups()))
            return
        super().data_received(data)


class _FloorServer(EmulatorServer):
    connection_class = _FloorConnection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue", action="append", default=[])
    args = parser.parse_args()
    emulator = _FloorServer(build_config(queue_flags=args.queue), port=args.port).start()
    print(emulator.connection_string(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
