"""`digestctl crd`: print or check the generated CustomResourceDefinition."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from digest_api.crd import CRD_PATH, crd_yaml
from digest_api.specdoc import DOC_PATH, spec_markdown
from digest_cli.exitcodes import ExitCode


@click.command()
@click.option("--write", "write_path", type=click.Path(dir_okay=False, path_type=Path),
              is_flag=False, flag_value=str(CRD_PATH), default=None,
              help=f"Write the CRD to this file instead of stdout (default {CRD_PATH}).")
@click.option("--docs", is_flag=True, help=f"Produce the Markdown spec reference ({DOC_PATH}) instead of the CRD.")
@click.option("--check", "check_path", type=click.Path(dir_okay=False, path_type=Path),
              is_flag=False, flag_value=str(CRD_PATH), default=None,
              help="Exit 3 when this file differs from the generated CRD.")
def crd(write_path: Path | None, check_path: Path | None, docs: bool) -> None:
    """Generate the DigestPipeline CRD (or its Markdown reference) from the API models."""
    text = spec_markdown() if docs else crd_yaml()
    if check_path is not None:
        current = check_path.read_text() if check_path.exists() else ""
        if current != text:
            click.echo(f"{check_path} is out of date; run: digestctl crd --write {check_path}", err=True)
            sys.exit(ExitCode.DIFFERS)
        click.echo(f"{check_path} is up to date", err=True)
        return
    if write_path is not None:
        write_path.parent.mkdir(parents=True, exist_ok=True)
        write_path.write_text(text)
        click.echo(f"wrote {write_path}", err=True)
        return
    click.echo(text, nl=False)
