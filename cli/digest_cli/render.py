"""`digestctl render`: print what the operator would create for a pipeline, offline (like `helm template`)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click
import yaml

from digest_api import yamlio
from digest_api.parse import SpecError
from digest_cli.exitcodes import ExitCode


def _documents(stream: TextIO) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@click.command()
@click.option("-f", "--filename", "source", type=click.File("r"), required=True,
              help="Pipeline YAML (one or more DigestPipeline documents); '-' reads stdin.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(source: TextIO, output: str) -> None:
    """Print the objects the operator would create for the pipelines in FILE.

    ownerReferences are added only when the input carries metadata.uid (the operator always sets them).
    Exit codes: 0 rendered, 1 invalid pipeline (every problem is printed with its field path), 2 usage.
    """
    from digest_operator.render.offline import render_documents

    try:
        documents = _documents(source)
        objects = render_documents(documents)
    except yaml.YAMLError as exc:
        click.echo(f"error: {source.name}: not valid YAML: {exc}", err=True)
        sys.exit(ExitCode.INVALID_INPUT)
    except SpecError as exc:
        click.echo(f"error: {source.name}: invalid DigestPipeline:", err=True)
        for path, message in exc.problems:
            click.echo(f"  {path}: {message}", err=True)
        sys.exit(ExitCode.INVALID_INPUT)
    if output == "json":
        click.echo(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        click.echo(yamlio.dump_all(objects), nl=False)
