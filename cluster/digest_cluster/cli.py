"""`digestctl cluster up | down | status | build`: the local single-node cluster for users and tests."""

from __future__ import annotations

import json
import sys

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
