"""`digestctl cluster up | down | status | build`: the local single-node cluster for users and tests; `digestctl up`
/ `down`: the whole system on it and the load test (`stack`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from digest_cluster import cluster as cluster_mod


@click.group()
def cluster() -> None:
    """A real single-node Kubernetes on this machine (root; built from Go modules, cached)."""


def _fail(error: Exception) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@cluster.command()
def up() -> None:
    """Build (cached) and start the cluster; prints the kubeconfig to use with kubectl."""
    try:
        started = cluster_mod.up()
    except (cluster_mod.ClusterError, OSError, RuntimeError) as error:
        _fail(error)
        return
    click.echo(f"export KUBECONFIG={started.kubeconfig}")


@cluster.command()
def down() -> None:
    """Stop the cluster and undo its changes to the host (bridge, iptables, mounts, sysctls)."""
    cluster_mod.down()


@cluster.command()
def status() -> None:
    """The daemons, the node's readiness and the kubeconfig, as JSON; exit 1 when the node is not Ready."""
    state = cluster_mod.status()
    click.echo(json.dumps(state, indent=2))
    if not state["nodeReady"]:
        sys.exit(1)


@cluster.command()
@click.argument("components", type=click.Choice(["controlplane", "node", "keda", "all"]), default="node")
def build(components: str) -> None:
    """Build the cluster's components from Go modules into the cache (reused when present)."""
    try:
        for directory in cluster_mod.build(components):
            click.echo(str(directory))
    except cluster_mod.ClusterError as error:
        _fail(error)


@click.command("up")
@click.option("--requests", default=25, show_default=True, help="Digest requests the load test sends.")
@click.option("--poison", default=3, show_default=True, help="Poison messages the load test sends.")
@click.option("--post-seconds", default=1.0, show_default=True,
              help="How long the local Teams takes per post (Teams itself: about a second).")
@click.option("--keep", is_flag=True, help="Leave everything running (kubectl, the Teams page, Prometheus).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the report (timeline.html, summary.json, samples.json); default: in the state dir.")
def up_command(requests: int, poison: int, post_seconds: float, keep: bool, output: Path | None) -> None:
    """Run the whole system on this machine and the team's load test (root; the first run builds for ~25 min).

    Starts a real single-node cluster, builds the images from the Dockerfiles, starts the Service Bus emulator,
    a local Teams, PostgreSQL, KEDA and Prometheus, installs the operator from manifests/, applies a sample
    pipeline, then sends the digest requests and poison messages while showing queue depth, replicas and
    deliveries; ends with a summary, a timeline chart and the dead-letter outcome."""
    from digest_cluster import loadtest, stack

    options = stack.Options(requests=requests, poison=poison, post_seconds=post_seconds, output=output)
    live = _live_printer()
    try:
        running, result = stack.up(options, _progress, live)
    except (cluster_mod.ClusterError, OSError, RuntimeError) as error:
        _fail(error)
        return
    finally:
        live("")
    click.echo(loadtest.table(result.summary))
    for letter in result.dead_letters:
        click.echo(f"  dead-lettered {letter['message_id']}: {letter['reason']}: {letter['description']}")
    click.echo(f"timeline chart: {result.output / 'timeline.html'}")
    if keep:
        click.echo(f"export KUBECONFIG={running.cluster.kubeconfig}   # kubectl get dgp -n {stack.NAMESPACE}; "
                   f"kubectl describe dgp {stack.PIPELINE} -n {stack.NAMESPACE}")
        click.echo(f"Teams page: {running.teams.connector_url}")
        click.echo(f"Prometheus: {running.prometheus_url}")
        click.echo("remove it all with: digestctl down")
    else:
        stack.down(_progress)


@click.command("down")
def down_command() -> None:
    """Remove what `digestctl up` started: the host services and the cluster (host changes undone)."""
    from digest_cluster import stack

    stack.down(_progress)


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _live_printer() -> Callable[[str], None]:
    """One line rewritten in place on a terminal; every tenth line otherwise (logs stay short)."""
    interactive = sys.stdout.isatty()
    count = 0

    def show(line: str) -> None:
        nonlocal count
        if interactive:
            click.echo(f"\r\033[K{line}", nl=not line)
        elif line and count % 10 == 0:
            click.echo(line)
        count += 1

    return show
