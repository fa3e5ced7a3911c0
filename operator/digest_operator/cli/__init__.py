"""`digestctl`: one CLI for the operator, the worker, the dead-letter toolkit and the local stack."""

from __future__ import annotations

import click

from digest_operator.cli import crd, dlq, emulator, operator, render, rollout
from digest_worker import cli as worker_cli

LOCAL = {"cluster": "cluster", "up": "up_command", "down": "down_command"}
"""Commands of the local-cluster package (`digest_cluster.cli`), which the images do not contain."""


class _Main(click.Group):
    """`digestctl`; the LOCAL commands are loaded on use, and only where the local-cluster package is installed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LOCAL])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LOCAL:
            return super().get_command(ctx, cmd_name)
        try:
            from digest_cluster import cli
        except ImportError:  # an installation without the local cluster (the operator and worker images)
            return None
        command: click.Command = getattr(cli, LOCAL[cmd_name])
        return command


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
