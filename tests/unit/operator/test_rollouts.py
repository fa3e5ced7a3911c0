"""Pure rollout records, history and the rollback decision."""

from __future__ import annotations

from typing import Any

from digest_api.imageref import parse_image
from digest_operator.rollout import RolloutState
from digest_operator.rollouts import (
    annotate,
    crash_looping,
    last_good,
    mark_rolled_back,
    record_history,
    recorded_rollback,
    rollback_in_effect,
    selector,
    should_roll_back,
    track,
)

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
PROGRESSING = RolloutState("Progressing", "0 of 1 updated replicas are available", 1, 0)
COMPLETE = RolloutState("Complete", "1/1 replicas ready", 1, 1)
FAILED = RolloutState("Failed", "rollout exceeded its progress deadline", 1, 0)


def deployment(digest: str, env: str = "x") -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [
        {"name": "worker", "image": f"r.example.com/w@{digest}", "env": [{"name": "E", "value": env}]}]}}}}


def test_a_new_template_starts_a_revision_and_finishes_once() -> None:
    first = track(None, deployment(A), PROGRESSING, "t1")
    assert (first["revision"], first["digest"], first["phase"], first["startedTime"]) == (1, A, "Progressing", "t1")
    assert track(first, deployment(A), PROGRESSING, "t2") == first  # nothing changes: nothing to write
    done = track(first, deployment(A), COMPLETE, "t3")
    assert (done["phase"], done["finishedTime"]) == ("Complete", "t3")
    assert track(done, deployment(A), PROGRESSING, "t4") == done  # scaling later is not a rollout
    second = track(done, deployment(A, env="y"), PROGRESSING, "t5")  # any template change is a rollout
    assert (second["revision"], second["startedTime"]) == (2, "t5")
    failed = track(second, deployment(A, env="y"), FAILED, "t6")
    assert (failed["phase"], failed["finishedTime"]) == ("Failed", "t6")


def test_history_is_newest_first_and_bounded() -> None:
    history: list[dict[str, Any]] = []
    for revision in range(1, 5):
        history = record_history(history, {"revision": revision, "image": "i", "digest": A, "phase": "Complete"}, 3)
    assert [h["revision"] for h in history] == [4, 3, 2]
    history = record_history(history, {"revision": 4, "phase": "Failed"}, 3, result="RolledBack")
    history = record_history(history, {"revision": 4, "phase": "Failed"}, 3)
    assert history[0]["result"] == "RolledBack"
    history = record_history(history, {"revision": 5, "phase": "Progressing"}, 3)
    history = record_history(history, {"revision": 6, "phase": "Progressing"}, 3)
    assert [h["result"] for h in history] == ["Progressing", "Superseded", "RolledBack"]


def test_rollback_decision() -> None:
    history = [
        {"revision": 2, "image": f"r.example.com/w@{B}", "digest": B, "result": "Failed"},
        {"revision": 1, "image": f"r.example.com/w@{A}", "digest": A, "result": "Complete"},
    ]
    failed = {"revision": 2, "image": f"r.example.com/w@{B}", "digest": B, "phase": "Failed"}
    decision = should_roll_back(failed, history, auto_rollback=True)
    assert decision is not None and (decision.failed.digest, decision.restored.digest) == (B, A)
    assert should_roll_back(failed, history, auto_rollback=False) is None
    assert should_roll_back({**failed, "phase": "Progressing"}, history, auto_rollback=True) is None
    assert should_roll_back(failed, history[:1], auto_rollback=True) is None  # nothing good to go back to
    assert last_good(history, excluding=A) is None
    assert last_good(history, excluding=B) == parse_image(f"r.example.com/w@{A}")
    status = {"failedImage": f"r.example.com/w@{B}", "restoredImage": f"r.example.com/w@{A}", "generation": 4}
    recorded = recorded_rollback(status, None)
    assert recorded is not None and recorded.as_status() == status
    assert rollback_in_effect(recorded, 4) == recorded
    assert rollback_in_effect(recorded, 5) is None  # the spec changed
    # a status write lost after the Deployment was applied: the Deployment still says so
    annotated = annotate({"metadata": {"name": "w"}}, recorded)
    assert recorded_rollback(None, annotated) == recorded
    assert mark_rolled_back(history, recorded)[0]["result"] == "RolledBack"


def test_crash_looping_counts_only_pods_of_the_new_image() -> None:
    def pod(image: str, reason: str) -> dict[str, Any]:
        return {"metadata": {"name": f"p-{reason}"}, "spec": {"containers": [{"name": "worker", "image": image}]},
                "status": {"containerStatuses": [{"name": "worker", "restartCount": 3,
                                                  "state": {"waiting": {"reason": reason}}}]}}

    new, old = f"r.example.com/w@{B}", f"r.example.com/w@{A}"
    assert crash_looping([pod(old, "CrashLoopBackOff")], new) is None
    assert crash_looping([pod(new, "ContainerCreating")], new) is None
    why = crash_looping([pod(old, "ContainerCreating"), pod(new, "CrashLoopBackOff")], new)
    assert why == "pod p-CrashLoopBackOff is in CrashLoopBackOff (restarts: 3)"
    assert crash_looping([pod(new, "ImagePullBackOff")], new) is not None
    assert selector({"spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}}) == "a=1,b=2"


def test_a_rollout_at_zero_replicas_is_verified_or_failed_by_the_first_scale_up() -> None:
    at_zero = RolloutState("Complete", "scaled to zero", 0, 0)
    record = track(None, deployment(A), at_zero, "t1")
    assert (record["phase"], record["verified"]) == ("Complete", False)
    scaling_up = track(record, deployment(A), PROGRESSING, "t2")
    assert scaling_up == record  # still Complete (scaling is not a rollout), not yet verified
    assert track(record, deployment(A), COMPLETE, "t3")["verified"] is True
    failed = track(record, deployment(A), FAILED, "t4")
    assert (failed["phase"], failed["finishedTime"], "verified" in failed) == ("Failed", "t4", False)
    verified = track(record, deployment(A), COMPLETE, "t3")
    assert track(verified, deployment(A), FAILED, "t5") == verified  # a verified rollout stays done


def test_rollback_prefers_a_digest_that_ran() -> None:
    c = "sha256:" + "c" * 64
    history = [
        {"revision": 3, "image": f"r.example.com/w@{c}", "digest": c, "result": "Failed"},
        {"revision": 2, "image": f"r.example.com/w@{B}", "digest": B, "result": "Complete", "verified": False},
        {"revision": 1, "image": f"r.example.com/w@{A}", "digest": A, "result": "Complete", "verified": True},
    ]
    assert last_good(history, excluding=c) == parse_image(f"r.example.com/w@{A}")
    assert last_good(history[:2], excluding=c) == parse_image(f"r.example.com/w@{B}")  # better than nothing
