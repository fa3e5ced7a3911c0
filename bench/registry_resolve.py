"""Tag resolution cost against a real registry (docker-registry on loopback), per auth mode.

Baseline, measured in the same run: one plain `GET /v2/` on a kept-alive connection. Prints the mean latency of a
resolution and its ratio to the baseline (anonymous is one HEAD; basic auth answers a 401 challenge first; the
token flow adds a token request; the GET fallback hashes the manifest body).

    uv run python -m bench.registry_resolve [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from digest_api.imageref import ImageRef, parse_image
from digest_operator.registry import Credentials, RegistryClient
from tests.support.registry import PASSWORD, USER, Mode, Registry, StrippingProxy


async def _mean(rounds: int, call: Callable[[], Awaitable[None]]) -> float:
    await call()  # warm up: connection, first challenge
    started = time.perf_counter()
    for _ in range(rounds):
        await call()
    return (time.perf_counter() - started) / rounds


async def main(rounds: int) -> None:
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        registries: dict[Mode, Registry] = {}
        for mode in ("anonymous", "htpasswd", "token"):
            (Path(tmp) / mode).mkdir()
            registries[mode] = await Registry(Path(tmp) / mode, mode=mode).start()
        try:
            for registry in registries.values():
                await registry.push_index("bench/worker", "1.0")
            anonymous = registries["anonymous"]
            async with aiohttp.ClientSession() as session:
                async def baseline() -> None:
                    async with session.get(f"{anonymous.url}/v2/") as response:
                        await response.read()
                base = await _mean(rounds, baseline)
            proxy = await StrippingProxy(anonymous.url).start()
            login = Credentials(USER, PASSWORD)
            cases: list[tuple[str, str, Credentials | None]] = [
                (mode, registry.host, login if mode != "anonymous" else None) for mode, registry in registries.items()
            ]
            cases.append(("no digest header (GET + sha256, via a proxy)", proxy.host, None))
            for name, host, credentials in cases:
                client = RegistryClient(insecure_hosts={host})
                image = parse_image(f"{host}/bench/worker:1.0")

                async def resolve(client: RegistryClient = client, image: ImageRef = image,
                                  credentials: Credentials | None = credentials) -> None:
                    await client.resolve(image, credentials)
                results.append((name, await _mean(rounds, resolve)))
                await client.close()
            await proxy.stop()
        finally:
            for registry in registries.values():
                await registry.close()
    print(f"baseline GET /v2/: {base * 1000:.2f} ms")
    for name, seconds in results:
        print(f"{name:45s} {seconds * 1000:7.2f} ms  = {seconds / base:5.1f} x baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    asyncio.run(main(parser.parse_args().rounds))
