"""`digestctl rollout status|history|undo` against the emulated API (kubeconfig login), with the real operator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest_cli import main
from digest_cli.exitcodes import ExitCode
from tests.e2e.test_operator import DGP, PATHS
from tests.pinning.test_rollout_e2e import BAD, GOOD, NEXT, REPO, image_of, report, rollout
from tests.support.kubeapi import KubeApi
from tests.support.kubeconfig import write_kubeconfig
from tests.support.operator_thread import OperatorThread
from tests.support.samples import minimal

pytestmark = pytest.mark.e2e


@pytest.fixture
async def operator(kube_api: KubeApi) -> AsyncIterator[OperatorThread]:
    op = await asyncio.to_thread(OperatorThread(kube_api.url).start)
    yield op
    await asyncio.to_thread(op.stop)


@pytest.fixture
def kubeconfig(kube_api: KubeApi, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", kube_api.url)


async def digestctl(kubeconfig: Path, *args: str) -> Result:
    """Run the CLI in a thread: it runs its own event loop, and the emulated API needs the test's."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["rollout", *args, "--kubeconfig", str(kubeconfig)])


async def test_status_history_and_undo(kube_api: KubeApi, operator: OperatorThread, kubeconfig: Path) -> None:
    await kube_api.create(DGP, minimal(image=f"{REPO}@{GOOD}", rollout={"autoRollback": True}))
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("phase") == "Progressing")
    waiting = await digestctl(kubeconfig, "status", "demo", "--no-watch")
    assert waiting.exit_code == 0 and "Waiting for rollout of revision 1" in waiting.stdout

    # --watch waits for the Deployment controller
    watching = asyncio.create_task(digestctl(kubeconfig, "status", "demo", "--timeout", "30"))
    await report(kube_api, image=f"{REPO}@{GOOD}")
    done = await watching
    assert done.exit_code == 0, done.output
    assert f"successfully rolled out revision 1 ({REPO}@{GOOD})" in done.stdout

    # a failed digest is rolled back: status says so and exits 4
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}@{BAD}"}})
    await report(kube_api, image=f"{REPO}@{BAD}", failed=True)
    await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{GOOD}")
    await report(kube_api, image=f"{REPO}@{GOOD}")
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("revision") == 3 and rollout(o).get(
        "phase") == "Complete")
    rolled_back = await digestctl(kubeconfig, "status", "demo")
    assert rolled_back.exit_code == ExitCode.ROLLOUT_FAILED
    assert "was rolled back" in rolled_back.stdout and BAD in rolled_back.stdout

    history = await digestctl(kubeconfig, "history", "demo")
    assert history.exit_code == 0
    lines = history.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "RESULT", "STARTED", "FINISHED", "IMAGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["3", "Complete"], ["2", "RolledBack"], ["1", "Complete"]]
    entries = json.loads((await digestctl(kubeconfig, "history", "demo", "-o", "json")).stdout)
    assert [e["digest"] for e in entries] == [GOOD, BAD, GOOD]

    # a new digest completes; undo pins the previous good one into the spec and the operator rolls it out
    await kube_api.patch(f"{DGP}/demo", {"spec": {"image": f"{REPO}:2.0@{NEXT}"}})
    await report(kube_api, image=f"{REPO}:2.0@{NEXT}")
    await kube_api.wait_for(f"{DGP}/demo", lambda o: rollout(o).get("digest") == NEXT and rollout(o).get(
        "phase") == "Complete")
    dry = await digestctl(kubeconfig, "undo", "demo", "--dry-run")
    assert dry.exit_code == 0 and f"would pin revision 3: spec.image {REPO}:2.0@{NEXT} -> {REPO}@{GOOD}" in dry.stdout
    undone = await digestctl(kubeconfig, "undo", "demo")
    assert undone.exit_code == 0, undone.output
    pipeline = await kube_api.get(f"{DGP}/demo")
    assert pipeline is not None and pipeline["spec"]["image"] == f"{REPO}@{GOOD}"
    await kube_api.wait_for(PATHS["Deployment"], lambda o: image_of(o) == f"{REPO}@{GOOD}")

    missing = await digestctl(kubeconfig, "undo", "demo", "--to-revision", "99")
    assert missing.exit_code == 1 and "revision 99 is not in the history" in missing.output
    absent = await digestctl(kubeconfig, "status", "nope")
    assert absent.exit_code == 1 and "DigestPipeline default/nope not found" in absent.output
