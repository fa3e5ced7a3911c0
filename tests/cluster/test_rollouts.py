"""Operator-driven rollouts on real pods: a new digest rolls out through the Deployment controller and the
kubelet; an image whose container crashes becomes `NewPodsFailing` and is rolled back to the last good digest;
`digestctl rollout status/history/undo` agree with what the pods run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from digest_cluster import images, install, sample
from digest_cluster.cluster import Cluster
from digest_cluster.services import Emulator, Postgres, Teams
from digest_cluster.stack import MAX_DELIVERY, QUEUE
from tests.cluster.conftest import Images
from tests.cluster.helpers import pods, ready

SELECTOR = "app.kubernetes.io/instance=roll,app.kubernetes.io/component=worker"


def _digestctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "digestctl"), "rollout", *args,
                           "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=300)


def _running_images(cluster: Cluster, namespace: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in pods(cluster, namespace, SELECTOR)
            if ready(p) and not p["metadata"].get("deletionTimestamp")}


def _set_image(cluster: Cluster, namespace: str, image: str) -> None:
    cluster.kubectl("patch", "dgp", "roll", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"image": image}}))


def _rollout(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status", {}).get("rollout") or {})


def test_new_digest_rolls_out_and_a_crashing_one_is_rolled_back(
        cluster: Cluster, project_images: Images, operator_installed: str, keda_crds: None, emulator: Emulator,
        teams: Teams, postgres: Postgres, namespace: str) -> None:
    good = project_images.worker
    newer = images.derived_image(project_images.store, good, "digest-worker", labels={"digest.dev/test": "newer"})
    crashing = images.derived_image(project_images.store, good, "digest-worker", labels={"digest.dev/test": "crash"},
                                    entrypoint=["python3", "-c", "import sys; sys.exit(3)"])
    assert len({good, newer, crashing}) == 3
    install.apply_objects(cluster, sample.secrets(namespace, emulator, teams, postgres))
    install.apply_objects(cluster, [sample.pipeline(
        "roll", namespace, good, teams, queue=QUEUE, max_delivery=MAX_DELIVERY,
        rollout={"autoRollback": True, "progressDeadlineSeconds": 120})])
    ns = ("-n", namespace)
    install.wait_for(cluster, ("dgp", "roll", *ns), lambda o: _rollout(o).get("phase") == "Complete"
                     and _running_images(cluster, namespace) == {good}, 180, "the first rollout")

    # a new digest: the Deployment controller replaces the pod, the kubelet runs the new image
    _set_image(cluster, namespace, newer)
    assert _digestctl(cluster, "status", "roll", *ns, "--timeout", "180").returncode == 0
    assert _running_images(cluster, namespace) == {newer}
    assert _rollout(install.get(cluster, "dgp", "roll", *ns))["digest"] == newer.split("@", 1)[1]

    # a digest whose container exits at once: NewPodsFailing, then the automatic rollback to the last good one
    _set_image(cluster, namespace, crashing)
    rolled = install.wait_for(cluster, ("dgp", "roll", *ns), lambda o: (c := install.condition(o, "Degraded"))
                              is not None and c.get("reason") == "RolledBack", 240, "the automatic rollback")
    degraded = install.condition(rolled, "Degraded")["message"]  # type: ignore[index]
    # failed early on the crash loop (NewPodsFailing), not at the progress deadline
    assert "new pods fail" in degraded and crashing.split("@", 1)[1] in degraded, degraded
    install.wait_for(cluster, ("dgp", "roll", *ns), lambda _: _running_images(cluster, namespace) == {newer}, 120,
                     "pods running the last good digest again")
    status = _digestctl(cluster, "status", "roll", *ns, "--no-watch")
    assert status.returncode == 4, status.stdout + status.stderr
    history = json.loads(_digestctl(cluster, "history", "roll", *ns, "-o", "json").stdout)
    by_digest = {entry["digest"]: entry["result"] for entry in history}
    assert by_digest[crashing.split("@", 1)[1]] in ("Failed", "RolledBack"), history
    assert by_digest[good.split("@", 1)[1]] in ("Complete", "Superseded"), history
    events = {e["reason"] for e in (install.get(cluster, "events", *ns, "--field-selector",
                                                "involvedObject.name=roll") or {}).get("items", [])}
    assert "RolledBack" in events, events

    # undo pins the previous good digest into the spec, and the pods follow
    undo = _digestctl(cluster, "undo", "roll", *ns)
    assert undo.returncode == 0, undo.stdout + undo.stderr
    spec_image = (install.get(cluster, "dgp", "roll", *ns) or {})["spec"]["image"]
    assert spec_image.split("@", 1)[1] in {good.split("@", 1)[1], newer.split("@", 1)[1]}
    assert _digestctl(cluster, "status", "roll", *ns, "--timeout", "180").returncode == 0
    assert {i.split("@", 1)[1] for i in _running_images(cluster, namespace)} == {spec_image.split("@", 1)[1]}
