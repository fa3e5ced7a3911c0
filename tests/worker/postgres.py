"""A real PostgreSQL server (Debian's `postgresql` package) in a temp dir, run as a non-root user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.kubeconfig import free_port


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does this)")
    return Path(found[-1]).parent


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="digest-pg-"))
    run_as: dict[str, int] = {}
    if os.geteuid() == 0:  # initdb refuses root: run the server as the `postgres` system user
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
    user = "digest"
    data, port = root / "data", free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run([bindir / "initdb", "-D", data, "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, env=env, **run_as)  # type: ignore[call-overload]
    subprocess.run([bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
                    "-c synchronous_commit=off -c max_connections=200", "start"],
                   check=True, capture_output=True, env=env, **run_as)  # type: ignore[call-overload]
    try:
        yield PostgresServer(port, user)
    finally:
        subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True,
                       env=env, **run_as)  # type: ignore[call-overload]
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user=server.user, database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server.url(name)
