"""`digestctl emulator`: the local Service Bus emulator (AMQP, no Docker)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from digest_cli.exitcodes import ExitCode


def _default_tls_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "digest-pipelines" / "emulator-tls"


@click.command()
@click.option("--port", type=int, default=5672, show_default=True, help="AMQP port (plain TCP, as the emulator).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--config", "config_file", type=click.Path(exists=False, dir_okay=False, path_type=Path),
              help="The official emulator's Config.json (comments allowed).")
@click.option("--queue", "queues", multiple=True, metavar="NAME[:Prop=Value,...]",
              help="An ad-hoc queue, e.g. orders:MaxDeliveryCount=5,LockDuration=PT30S (repeatable).")
@click.option("--key", "keys", multiple=True, metavar="NAME=VALUE",
              help="Shared access keys (repeatable; default RootManageSharedAccessKey=SAS_KEY_VALUE).")
@click.option("--insecure", is_flag=True, help="Accept any token without checking its signature.")
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), default=_default_tls_dir,
              show_default="$XDG_CACHE_HOME/digest-pipelines/emulator-tls",
              help="Where the management endpoint's CA (ca.pem) and certificate are kept (made when absent).")
def emulator(port: int, host: str, config_file: Path | None, queues: tuple[str, ...], keys: tuple[str, ...],
             insecure: bool, tls_dir: Path) -> None:
    """Run a local Azure Service Bus emulator that the azure-servicebus SDK talks to over AMQP.

    Prints the connection string to use (with UseDevelopmentEmulator=true) and serves until interrupted. The same
    port and connection string also serve ServiceBusAdministrationClient (queue properties and runtime counts)
    over HTTPS: pass connection_verify=<tls-dir>/ca.pem.
    """
    try:
        from digest_sbemulator.config import ConfigError, build_config
        from digest_sbemulator.server import EmulatorServer
    except ImportError as exc:  # the optional extra is missing
        click.echo(f"error: the emulator needs the 'emulator' extra: pip install 'digest-pipelines[emulator]' "
                   f"({exc})", err=True)
        sys.exit(ExitCode.INVALID_INPUT)
    parsed_keys: dict[str, str] = {}
    for item in keys:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--key")
        parsed_keys[name] = value
    try:
        config = build_config(config_file=config_file, queue_flags=queues, keys=parsed_keys or None,
                              insecure=insecure)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.INVALID_INPUT)
    server = EmulatorServer(config, host=host, port=port, tls_dir=tls_dir).start()
    click.echo(server.connection_string())
    click.echo(f"serving queues: {', '.join(sorted(config.queues)) or '(none)'}", err=True)
    click.echo(f"management (ServiceBusAdministrationClient): same connection string, "
               f"connection_verify={server.tls.ca_file}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
