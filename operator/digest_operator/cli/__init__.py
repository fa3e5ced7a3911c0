"""`digestctl`: one CLI for the operator, the worker, the dead-letter toolkit and the local stack."""

from __future__ import annotations

import click

from digest_operator.cli import crd, dlq, emulator, operator, render, rollout
from digest_cluster import cli as cluster_cli
from digest_worker import cli as worker_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="digest-pipelines", prog_name="digestctl")
def main() -> None:
    """Operate Azure Service Bus digest pipelines on Kubernetes."""


main.add_command(render.render)
main.add_command(crd.crd)
main.add_command(operator.operator)
main.add_command(emulator.emulator)
main.add_command(rollout.rollout)
main.add_command(worker_cli.worker)
main.add_command(worker_cli.enqueue)
main.add_command(worker_cli.references)
main.add_command(worker_cli.items)
main.add_command(dlq.dlq)
main.add_command(cluster_cli.cluster)
