"""`digestctl operator`: run the DigestPipeline operator (Kopf)."""

from __future__ import annotations

import click


@click.command()
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="Watch only these namespaces (repeatable; globs allowed). Default: all namespaces.")
@click.option("--probe-port", type=int, default=8080, show_default=True,
              envvar="DIGEST_OPERATOR_PROBE_PORT",
              help="Port of /healthz, /readyz and /metrics.")
@click.option("--peering", default="digest-operator", show_default=True, envvar="DIGEST_OPERATOR_PEERING",
              help="Kopf peering object shared by the replicas; only one replica acts at a time.")
@click.option("--standalone", is_flag=True, envvar="DIGEST_OPERATOR_STANDALONE",
              help="Run without peering (single replica, development).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(namespaces: tuple[str, ...], probe_port: int, peering: str, standalone: bool, verbose: bool) -> None:
    """Reconcile DigestPipelines into workers, autoscaling, dead-letter monitoring and alerts."""
    from digest_operator.main import run

    if namespaces and not standalone:
        raise click.UsageError(
            "--namespace needs --standalone: the shipped peering is cluster-wide (ClusterKopfPeering); "
            "run one replica per namespace set, or watch all namespaces with peering")
    run(namespaces=list(namespaces), probe_port=probe_port, peering=None if standalone else peering,
        verbose=verbose)
