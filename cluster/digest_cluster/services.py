"""Host services pods reach on the node's bridge address: the Service Bus emulator, the local Teams (Bot Connector
and token endpoint) and PostgreSQL. Each runs as a recorded daemon of the cluster (`down` stops it), listening on
the node IP (and loopback where host tools need it), never on the uplink."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from digest_cluster import pki, processes
from digest_cluster.layout import NODE_IP, Layout

EMULATOR_PORT = 5672
TEAMS_CONNECTOR_PORT = 3978
TEAMS_TOKEN_PORT = 3979
POSTGRES_PORT = 5432
TEAMS_APP_ID = "00000000-0000-0000-0000-000000000001"


@dataclass(frozen=True)
class Emulator:
    connection_string: str  # at the node IP: for pods and for tools on this host alike
    ca_file: Path


@dataclass(frozen=True)
class Teams:
    connector_url: str  # the conversations' serviceUrl
    login_url: str  # spec.teams.loginUrl
    app_id: str
    password: str
    record: Path  # one JSON line per delivered activity

    def set_latency(self, seconds: float) -> None:
        """How long each accepted post takes from now on (the local Teams' `PUT /api/latency`)."""
        request = urllib.request.Request(f"{self.connector_url}api/latency", method="PUT",
                                         data=json.dumps({"seconds": seconds}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def delivered(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Postgres:
    url: str  # for pods (node IP, password)
    host_url: str  # for tools on this host


def _port_free(name: str, port: int) -> None:
    """Fail before starting `name` when something already listens on its port (its clients would talk to that)."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((NODE_IP, port)) == 0:
            raise processes.StartError(f"{name}: {NODE_IP}:{port} is already in use (a service left running by "
                                       f"`digestctl up --keep`? `digestctl down` removes it)")


def _tls_dir(layout: Layout, name: str, hosts: tuple[str, ...]) -> Path:
    """A serving certificate from the local CA, in the emulator's file names (ca.pem, server.pem, server-key.pem)."""
    directory = layout.root / "services" / name
    cert, key = pki.issue(layout.ca_dir, pki.Leaf("server", name, hosts=hosts, server=True), directory)
    shutil.copyfile(layout.ca_dir / "ca.crt", directory / "ca.pem")
    cert.rename(directory / "server.pem")
    key.rename(directory / "server-key.pem")
    return directory


def _python() -> list[str]:
    return [sys.executable]


def _digestctl() -> list[str]:
    script = Path(sys.executable).parent / "digestctl"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from digest_cli import main; main()"]


def start_emulator(layout: Layout, queues: list[str]) -> Emulator:
    """`digestctl emulator` on the node IP with these ad-hoc queues; its HTTPS management endpoint presents a
    certificate from the local CA (which KEDA and the images trust)."""
    _port_free("emulator", EMULATOR_PORT)
    tls = _tls_dir(layout, "emulator", (NODE_IP, "127.0.0.1", "localhost"))
    argv = [*_digestctl(), "emulator", "--host", NODE_IP, "--port", str(EMULATOR_PORT),
            "--tls-dir", str(tls)]
    for queue in queues:
        argv += ["--queue", queue]
    daemon = processes.spawn("emulator", argv, layout.logs, layout.pids)
    processes.wait_until(daemon, lambda: "Endpoint=sb://" in daemon.log.read_text(), "its connection string", 30)
    line = next(ln for ln in daemon.log.read_text().splitlines() if "Endpoint=sb://" in ln)
    connection = line[line.index("Endpoint=sb://"):].strip()
    return Emulator(connection, tls / "ca.pem")


def start_teams(layout: Layout, app_id: str = TEAMS_APP_ID) -> Teams:
    """The local Teams: a Bot Connector (HTTP) recording cards and a token endpoint (HTTPS, local CA)."""
    _port_free("teams", TEAMS_CONNECTOR_PORT)
    _port_free("teams", TEAMS_TOKEN_PORT)
    tls = _tls_dir(layout, "teams", (NODE_IP, "127.0.0.1", "localhost"))
    password = secrets.token_urlsafe(24)
    password_file = tls / "password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    record = layout.root / "services" / "teams" / "delivered.jsonl"
    record.unlink(missing_ok=True)
    daemon = processes.spawn("teams", [
        *_python(), "-m", "digest_cluster.teams", "--host", NODE_IP, "--connector-port", str(TEAMS_CONNECTOR_PORT),
        "--token-port", str(TEAMS_TOKEN_PORT), "--cert", str(tls / "server.pem"), "--key", str(tls / "server-key.pem"),
        "--app-id", app_id, "--password-file", str(password_file), "--record", str(record),
    ], layout.logs, layout.pids)
    connector = f"http://{NODE_IP}:{TEAMS_CONNECTOR_PORT}/"
    processes.wait_until(daemon, processes.http_ok(f"{connector}api/stats"), "its /api/stats", 30)
    # tenant `adfs`: MSAL skips its instance discovery at login.microsoftonline.com (offline here)
    return Teams(connector, f"https://{NODE_IP}:{TEAMS_TOKEN_PORT}/adfs", app_id, password, record)


def _postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise processes.StartError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent


def start_postgres(layout: Layout, database: str = "digests") -> Postgres:
    """A fresh PostgreSQL cluster (run as the `postgres` user) on the node IP and loopback; pods authenticate with
    a generated password (scram-sha-256), host tools over loopback."""
    bindir = _postgres_bindir()
    _port_free("postgres", POSTGRES_PORT)
    # its own directory in /tmp: the `postgres` user cannot traverse a private state directory (pytest's tmp)
    marker = layout.root / "services" / "postgres-dir"
    if marker.exists():
        shutil.rmtree(marker.read_text(), ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="digest-cluster-pg-"))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(root))
    entry = pwd.getpwnam("postgres")
    os.chown(root, entry.pw_uid, entry.pw_gid)
    password = secrets.token_urlsafe(18)
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    pwfile.chmod(0o600)
    data = root / "data"
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    initdb = subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(data), "-U",
                             "digest", f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
                            capture_output=True, text=True, env=env)
    if initdb.returncode != 0:
        raise processes.StartError(f"initdb failed ({initdb.returncode}): {initdb.stderr.strip()}")
    pwfile.unlink()
    with (data / "pg_hba.conf").open("w") as hba:
        hba.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                  "host all all 10.244.0.0/24 scram-sha-256\n")
    daemon = processes.spawn("postgres", [
        "runuser", "-u", "postgres", "--", str(bindir / "postgres"), "-D", str(data), "-p", str(POSTGRES_PORT),
        "-k", str(root), "-c", f"listen_addresses={NODE_IP},127.0.0.1", "-c", "fsync=off",
        "-c", "synchronous_commit=off", "-c", "max_connections=200",
    ], layout.logs, layout.pids, env=env)
    ready = subprocess.run
    processes.wait_until(daemon, lambda: ready([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                                                str(POSTGRES_PORT)], capture_output=True).returncode == 0,
                         "pg_isready", 60)
    subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "psql"), "-h", str(root), "-p",
                    str(POSTGRES_PORT), "-U", "digest", "-d", "postgres", "-c", f'CREATE DATABASE "{database}"'],
                   check=True, capture_output=True, env=env)
    return Postgres(f"postgresql://digest:{password}@{NODE_IP}:{POSTGRES_PORT}/{database}",
                    f"postgresql://digest:{password}@127.0.0.1:{POSTGRES_PORT}/{database}")


def stop(layout: Layout, name: str) -> None:
    """Stop the host service `name` (emulator, teams, postgres) if it runs; PostgreSQL's data goes with it."""
    for daemon in processes.recorded(layout.pids):
        if daemon.name == name:
            processes.stop(daemon, layout.pids)
    marker = layout.root / "services" / f"{name}-dir"
    if marker.exists():
        shutil.rmtree(marker.read_text(), ignore_errors=True)
        marker.unlink()
