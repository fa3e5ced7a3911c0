"""`digestctl rollout status|history|undo PIPELINE`: like `kubectl rollout`, from the pipeline's status.

Works against the cluster of the current kubeconfig context (or `--kubeconfig`). The formatters are pure; the
commands only read the pipeline (and for `undo`, patch `spec.image`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from digest_api import API_VERSION, PLURAL
from digest_cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from digest_operator.k8s import KubeClient

T = TypeVar("T")


# --- pure ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    message: str
    done: bool
    failed: bool


def rollout_report(pipeline: dict[str, Any]) -> StatusReport:
    """What `rollout status` says about `pipeline` now (done: nothing more to wait for)."""
    from digest_operator.conditions import DEGRADED, find

    name = pipeline["metadata"]["name"]
    status = pipeline.get("status") or {}
    if status.get("observedGeneration") != pipeline["metadata"].get("generation"):
        return StatusReport(f"Waiting for the operator to observe the latest spec of pipeline {name!r}...",
                            False, False)
    degraded = find(list(status.get("conditions") or []), DEGRADED) or {}
    rollout = status.get("rollout")
    if not rollout:
        pinned = find(list(status.get("conditions") or []), "ImagePinned") or {}
        if pinned.get("status") == "False":
            return StatusReport(f"pipeline {name!r} has no workload: {pinned.get('message')}", True, True)
        return StatusReport(f"Waiting for pipeline {name!r}: no rollout yet...", False, False)
    what = f"revision {rollout['revision']} ({rollout.get('image')})"
    if degraded.get("reason") == "RolledBack":
        return StatusReport(f"pipeline {name!r} was rolled back: {degraded.get('message')}", True, True)
    if rollout.get("phase") == "Failed":
        return StatusReport(f"pipeline {name!r} rollout of {what} failed: {rollout.get('message')}", True, True)
    if rollout.get("phase") == "Complete":
        return StatusReport(f"pipeline {name!r} successfully rolled out {what}", True, False)
    return StatusReport(f"Waiting for rollout of {what} to finish: {rollout.get('message', '')}", False, False)


def history_rows(pipeline: dict[str, Any]) -> list[list[str]]:
    rows = [["REVISION", "RESULT", "STARTED", "FINISHED", "IMAGE"]]
    for entry in (pipeline.get("status") or {}).get("history") or []:
        rows.append([str(entry.get("revision")), str(entry.get("result")), str(entry.get("startedTime") or "-"),
                     str(entry.get("finishedTime") or "-"), str(entry.get("image") or "-")])
    return rows


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def undo_target(pipeline: dict[str, Any], to_revision: int | None) -> dict[str, Any]:
    """The history entry `undo` pins: `to_revision`, else the newest completed rollout of another digest."""
    status = pipeline.get("status") or {}
    history = list(status.get("history") or [])
    current = (status.get("image") or {}).get("digest") or (status.get("rollout") or {}).get("digest")
    if to_revision is not None:
        for entry in history:
            if entry.get("revision") == to_revision:
                if not entry.get("digest"):
                    raise click.ClickException(f"revision {to_revision} has no pinned digest")
                return dict(entry)
        raise click.ClickException(f"revision {to_revision} is not in the history "
                                   f"(kept: {', '.join(str(h.get('revision')) for h in history) or 'none'})")
    for entry in history:
        if entry.get("result") == "Complete" and entry.get("digest") and entry.get("digest") != current:
            return dict(entry)
    raise click.ClickException("no earlier rollout of another digest completed; nothing to undo to")


# --- I/O -------------------------------------------------------------------------------------------------------


def _run(kubeconfig: str | None, action: Callable[[KubeClient, str], Awaitable[T]],
         namespace: str | None) -> T:
    import kopf

    from digest_operator.k8s import ApiError, KubeClient

    previous = os.environ.get("KUBECONFIG")
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # Kopf's kubeconfig login reads only the environment
    try:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    finally:
        if kubeconfig and previous is None:
            del os.environ["KUBECONFIG"]
        elif kubeconfig and previous is not None:
            os.environ["KUBECONFIG"] = previous
    if info is None:
        raise click.ClickException("no kubeconfig found (set KUBECONFIG or --kubeconfig)")

    async def main() -> T:
        client = KubeClient(lambda: info, field_manager="digestctl")
        try:
            return await action(client, namespace or info.default_namespace or "default")
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        raise click.ClickException(f"Kubernetes API: {exc}") from exc


async def _get(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    pipeline = await client.get(API_VERSION, PLURAL, namespace, name)
    if pipeline is None:
        raise click.ClickException(f"DigestPipeline {namespace}/{name} not found")
    return pipeline


_common = [
    click.argument("pipeline"),
    click.option("-n", "--namespace", help="Namespace; default: the kubeconfig context's."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig file; default: $KUBECONFIG."),
]


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(_common):
        fn = decorator(fn)
    return fn


@click.group()
def rollout() -> None:
    """Inspect and undo the operator-driven rollouts of a pipeline (like `kubectl rollout`)."""


@rollout.command()
@common
@click.option("--watch/--no-watch", "-w", default=True, show_default=True,
              help="Wait until the rollout completes or fails.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait with --watch.")
def status(pipeline: str, namespace: str | None, kubeconfig: str | None, watch: bool, timeout: float) -> None:
    """Show the latest rollout; exit 0 when it completed, 4 when it failed or was rolled back, 5 on timeout."""

    async def action(client: KubeClient, ns: str) -> StatusReport:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            report = rollout_report(await _get(client, ns, pipeline))
            if report.done or not watch:
                return report
            if report.message != last:
                click.echo(report.message, err=True)
                last = report.message
            if time.monotonic() > deadline:
                return StatusReport(f"timed out after {timeout:g} s: {report.message}", False, False)
            await asyncio.sleep(1)

    report = _run(kubeconfig, action, namespace)
    click.echo(report.message)
    if report.failed:
        sys.exit(ExitCode.ROLLOUT_FAILED)
    if not report.done and watch:
        sys.exit(ExitCode.TIMED_OUT)


@rollout.command()
@common
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def history(pipeline: str, namespace: str | None, kubeconfig: str | None, output: str) -> None:
    """List the recorded rollouts, newest first."""
    body = _run(kubeconfig, lambda client, ns: _get(client, ns, pipeline), namespace)
    if output == "json":
        click.echo(json.dumps((body.get("status") or {}).get("history") or [], indent=2))
    else:
        click.echo(table(history_rows(body)))


@rollout.command()
@common
@click.option("--to-revision", type=int, help="Revision to go back to; default: the last good one before.")
@click.option("--dry-run", is_flag=True, help="Print what would be pinned, change nothing.")
def undo(pipeline: str, namespace: str | None, kubeconfig: str | None, to_revision: int | None,
         dry_run: bool) -> None:
    """Pin the previous good digest into spec.image (the operator rolls it out)."""

    from digest_operator.k8s import resource_path

    async def action(client: KubeClient, ns: str) -> tuple[dict[str, Any], str]:
        body = await _get(client, ns, pipeline)
        target = undo_target(body, to_revision)
        if not dry_run:
            patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                     "spec": {"image": target["image"]}}
            await client.request("PATCH", resource_path(API_VERSION, PLURAL, ns, pipeline), body=patch,
                                 content_type="application/merge-patch+json")
        return target, str((body.get("spec") or {}).get("image"))

    target, before = _run(kubeconfig, action, namespace)
    verb = "would pin" if dry_run else "pinned"
    click.echo(f"pipeline {pipeline!r} {verb} revision {target['revision']}: spec.image {before} -> {target['image']}")
    if "@" not in before:
        click.echo(f"note: spec.image was the tag {before}; a digest in spec.image is used as is, so the tag is not "
                   f"resolved again until you set it back", err=True)
