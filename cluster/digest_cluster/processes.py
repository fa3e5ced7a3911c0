"""Daemons of the local cluster: started detached (they outlive `digestctl cluster up`), one log and one pid file
each, waited on by a health check, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StartError(RuntimeError):
    """A component did not start or did not become healthy; the message names it and shows its log's tail."""


def tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int
    log: Path

    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not reaped by us) counts as gone
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def spawn(name: str, argv: Sequence[str], logs: Path, pids: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> Daemon:
    """Start `argv` in its own session with stdout+stderr to `logs/<name>.log`; record its pid."""
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as handle:
        popen = subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=None if env is None else dict(env), cwd=cwd)
    (pids / f"{name}.pid").write_text(str(popen.pid))
    return Daemon(name, popen.pid, log)


def recorded(pids: Path) -> list[Daemon]:
    """The daemons with a pid file, in start order (oldest first)."""
    found: list[tuple[float, Daemon]] = []
    for path in pids.glob("*.pid") if pids.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            name = path.stem
            found.append((path.stat().st_mtime, Daemon(name, int(path.read_text()), pids.parent / "logs" /
                                                       f"{name}.log")))
    return [daemon for _, daemon in sorted(found, key=lambda item: item[0])]


def stop(daemon: Daemon, pids: Path, timeout: float = 15) -> None:
    """SIGTERM the daemon's process group, SIGKILL after `timeout`; remove its pid file."""
    if daemon.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while daemon.alive() and time.monotonic() < deadline:
            _reap(daemon.pid)
            time.sleep(0.1)
        if daemon.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while daemon.alive() and time.monotonic() < deadline:
                _reap(daemon.pid)
                time.sleep(0.05)
    _reap(daemon.pid)
    with contextlib.suppress(FileNotFoundError):
        (pids / f"{daemon.name}.pid").unlink()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(daemon: Daemon, check: Callable[[], bool], what: str, within: float = 60) -> float:
    """Poll `check` every 0.1 s until it holds; raise StartError if the daemon dies or time runs out. Returns the
    seconds it took."""
    started = time.monotonic()
    while True:
        if not daemon.alive():
            raise StartError(f"{daemon.name} exited before {what}; log {daemon.log}:\n{tail(daemon.log)}")
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        if time.monotonic() - started > within:
            raise StartError(f"{daemon.name}: no {what} after {within:.0f} s; log {daemon.log}:\n{tail(daemon.log)}")
        time.sleep(0.1)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=3) as response:
                return bool(response.status == 200)
        except urllib.error.URLError:
            return False

    return check


def socket_ready(path: Path) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
        return True

    return check


def insecure_context() -> ssl.SSLContext:
    """For health endpoints that serve a self-signed in-memory certificate (KCM, scheduler)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
