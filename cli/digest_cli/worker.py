"""`digestctl worker`: the digest worker process (the same as `python -m digest_worker`)."""

from __future__ import annotations

import os
import sys

import click


@click.command()
def worker() -> None:
    """Consume digest requests and post them to Teams (configured by DIGEST_* environment variables)."""
    from digest_worker.app import run

    sys.exit(run(os.environ))
