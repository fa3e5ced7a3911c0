"""`digestctl`: one CLI for the operator, the worker, the dead-letter toolkit, the emulator and the local stack.

One module per command group; each only parses options and calls the public functions of the component it drives,
which it imports when the command runs (the operator image lists every command without the worker's libraries).
"""

from __future__ import annotations

import click

from digest_cli import crd, dlq, emulator, enqueue, imports, operator, render, rollout, worker

LOCAL = {"cluster": "cluster", "up": "up_command", "down": "down_command"}
"""Commands of `digest_cli.local`, which drive the local-cluster package; the images do not contain it."""


class _Main(click.Group):
    """`digestctl`; the LOCAL commands are loaded on use, and only where the local-cluster package is installed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LOCAL])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LOCAL:
            return super().get_command(ctx, cmd_name)
        try:
            from digest_cli import local
        except ImportError:  # an installation without the local cluster (the operator and worker images)
            return None
        command: click.Command = getattr(local, LOCAL[cmd_name])
        return command


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="digest-pipelines", prog_name="digestctl")
def main() -> None:
    """Operate Azure Service Bus digest pipelines on Kubernetes."""


for command in (render.render, crd.crd, operator.operator, emulator.emulator, rollout.rollout, worker.worker,
                enqueue.enqueue, imports.references, imports.items, dlq.dlq):
    main.add_command(command)
