"""`digestctl render`: print what the operator would create for a pipeline, offline (like `helm template`)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click
import yaml

from digest_operator import yamlio
from digest_operator.api.parse import SpecError, parse_pipeline
from digest_operator.cli.exitcodes import ExitCode
from digest_operator.render import render_children


def _documents(stream: TextIO) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def render_documents(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Render every pipeline; raises SpecError (paths prefixed with the document index when there are several)."""
    objects: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    for index, doc in enumerate(documents):
        prefix = f"document {index}: " if len(documents) > 1 else ""
        if not isinstance(doc, dict):
            problems.append((f"{prefix}(root)", "is not a mapping"))
            continue
        try:
            pipeline = parse_pipeline(doc)
        except SpecError as exc:
            problems.extend((prefix + path, message) for path, message in exc.problems)
            continue
        image = pipeline.image
        if not image.pinned:
            pin = f"{image.name}:{image.tag or 'latest'}@sha256:<digest>"
            if pipeline.spec.image_policy.mode == "Require":
                message = (f"{image} is not pinned by digest (TagNotAllowed); the operator refuses tag-only images. "
                           f"Pin it as {pin}")
            else:
                message = (f"{image} is a tag, which the operator resolves from the registry at run time "
                           f"(imagePolicy {pipeline.spec.image_policy.mode}); to render offline, pin it as {pin}")
            problems.append((prefix + "spec.image", message))
            continue
        objects.extend(render_children(pipeline, image))
    if problems:
        raise SpecError(problems)
    return objects


@click.command()
@click.option("-f", "--filename", "source", type=click.File("r"), required=True,
              help="Pipeline YAML (one or more DigestPipeline documents); '-' reads stdin.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(source: TextIO, output: str) -> None:
    """Print the objects the operator would create for the pipelines in FILE.

    ownerReferences are added only when the input carries metadata.uid (the operator always sets them).
    Exit codes: 0 rendered, 1 invalid pipeline (every problem is printed with its field path), 2 usage.
    """
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
