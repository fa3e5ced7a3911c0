"""`digestctl` loads with nothing but the API package: each image holds only its own component (the operator image
has no worker or toolkit, the worker image no operator), so command modules import components when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.samples import ROOT

COMPONENTS = ("digest_operator", "digest_worker", "digest_dlq", "digest_sbemulator", "digest_cluster")

BLOCK = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
from digest_cli import main
main(sys.argv[2:], prog_name="digestctl")
"""


def _digestctl(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK, ",".join(blocked), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_help_lists_every_image_command_without_any_component() -> None:
    done = _digestctl(COMPONENTS, "--help")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"crd", "dlq", "emulator", "enqueue", "items", "operator", "references", "render", "rollout",
            "worker"} <= listed
    assert not {"cluster", "up", "down"} & listed  # the local-cluster commands need the local-cluster package


def test_the_crd_comes_from_the_api_package_alone() -> None:
    done = _digestctl(COMPONENTS, "crd", "--check")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("blocked", "args"), [
    (("digest_operator",), ["dlq", "monitor", "--pipeline", "ns/name", "--queue", "q", "--connection-string",
                            "Endpoint=sb://localhost/;SharedAccessKeyName=k;SharedAccessKey=v"]),
])
def test_a_command_whose_component_is_missing_says_so(blocked: tuple[str, ...], args: list[str]) -> None:
    done = _digestctl(blocked, *args)
    assert done.returncode == 2
    assert "--pipeline needs the operator package" in done.stderr
