"""Conditions, rollout reading, status and Events."""

from __future__ import annotations

from typing import Any

from digest_api.imageref import parse_image
from digest_operator.conditions import Condition, find, merge_conditions
from digest_operator.rollout import rollout_state
from digest_operator.status import Change, Observation, compute, events
from tests.support.samples import DIGEST

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
IMAGE = parse_image(f"registry.example.com/worker@{DIGEST}")


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions([], [Condition("Ready", "False", "RolloutInProgress", "a")], 1, T0)
    same = merge_conditions(first, [Condition("Ready", "False", "Other", "b")], 2, T1)
    assert find(same, "Ready") == {"type": "Ready", "status": "False", "reason": "Other", "message": "b",
                                   "lastTransitionTime": T0, "observedGeneration": 2}
    flipped = merge_conditions(same, [Condition("Ready", "True", "Available", "")], 2, T1)
    assert find(flipped, "Ready")["lastTransitionTime"] == T1  # type: ignore[index]


def test_foreign_conditions_are_kept_and_order_is_stable() -> None:
    previous = [{"type": "example.com/Custom", "status": "True", "reason": "X", "message": "",
                 "lastTransitionTime": T0}]
    merged = merge_conditions(previous, [Condition("Degraded", "False", "AsExpected"),
                                         Condition("Ready", "True", "Available")], 1, T1)
    assert [c["type"] for c in merged] == ["Ready", "Degraded", "example.com/Custom"]


def _deployment(**status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {"observedGeneration": 2, **status}}


def test_rollout_states_follow_kubectl_rollout_status() -> None:
    assert rollout_state({"metadata": {"generation": 1}, "spec": {}}).phase == "Progressing"
    assert rollout_state(_deployment(observedGeneration=1)).phase == "Progressing"
    assert rollout_state(_deployment(updatedReplicas=1, replicas=2)).message == "1 of 2 updated replicas are available"
    assert rollout_state(_deployment(updatedReplicas=2, replicas=3, availableReplicas=2)).message.startswith(
        "1 old replicas")
    done = rollout_state(_deployment(updatedReplicas=2, replicas=2, availableReplicas=2, readyReplicas=2))
    assert (done.phase, done.replicas, done.ready_replicas) == ("Complete", 2, 2)
    failed = rollout_state(_deployment(conditions=[{"type": "Progressing", "status": "False",
                                                    "reason": "ProgressDeadlineExceeded", "message": "too slow"}]))
    assert failed.phase == "Failed" and "too slow" in failed.message
    idle = rollout_state({"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}})
    assert idle.phase == "Complete" and "scaled to zero" in idle.message


def _complete() -> Any:
    return rollout_state({"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}})


def test_ready_status_and_events_on_first_reconcile() -> None:
    obs = Observation(generation=1, requested_image=str(IMAGE), image=IMAGE, rollout=_complete(),
                      changes=[Change("Created", "Deployment", "d"), Change("Created", "ScaledObject", "s")])
    status = compute({}, obs, T0)
    assert status["observedGeneration"] == 1
    assert status["image"] == {"ref": str(IMAGE), "digest": DIGEST, "short": IMAGE.short}
    assert (status["replicas"], status["readyReplicas"]) == (0, 0)
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Ready": ("True", "Available"), "ImagePinned": ("True", "DigestPinned"),
                     "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}
    evs = events({}, status, obs)
    assert [(e.type, e.reason) for e in evs] == [("Normal", "Created"), ("Normal", "Ready")]
    assert evs[0].message == "created Deployment/d, ScaledObject/s"


def test_no_events_and_identical_status_when_nothing_changed() -> None:
    obs = Observation(generation=1, requested_image=str(IMAGE), image=IMAGE, rollout=_complete())
    status = compute({}, obs, T0)
    again = compute(status, obs, T1)
    assert again == status
    assert events(status, again, obs) == []


def test_tag_refused_keeps_last_good_image_and_warns_once() -> None:
    obs = Observation(generation=2, requested_image="registry.example.com/worker:latest", image=IMAGE,
                      image_refused=True, rollout=_complete())
    status = compute({}, obs, T0)
    pinned = find(status["conditions"], "ImagePinned")
    assert pinned is not None and (pinned["status"], pinned["reason"]) == ("False", "TagNotAllowed")
    assert str(IMAGE) in pinned["message"]
    assert status["image"]["requested"] == "registry.example.com/worker:latest"
    assert find(status["conditions"], "Ready")["reason"] == "ImageNotPinned"  # type: ignore[index]
    assert [(e.type, e.reason) for e in events({}, status, obs)] == [("Warning", "TagNotAllowed")]
    assert events(status, compute(status, obs, T1), obs) == []


def test_invalid_spec_status_and_single_warning() -> None:
    obs = Observation(generation=3, invalid=[("spec.scaling.maxReplicas", "must be >= 1")])
    status = compute({"replicas": 2}, obs, T0)
    ready = find(status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "InvalidSpec"
    assert ready["message"] == "spec.scaling.maxReplicas: must be >= 1"
    assert status["replicas"] == 2 and status["observedGeneration"] == 3
    assert [(e.type, e.reason) for e in events({}, status, obs)] == [("Warning", "InvalidSpec")]
    assert events(status, compute(status, obs, T1), obs) == []


def test_conflicts_and_apply_failures_degrade() -> None:
    obs = Observation(generation=1, image=IMAGE, conflicts=["Deployment d exists and is not controlled"])
    status = compute({}, obs, T0)
    assert find(status["conditions"], "Degraded")["reason"] == "ChildConflict"  # type: ignore[index]
    obs = Observation(generation=1, image=IMAGE, failures=["applying ScaledObject s failed: 404"])
    status = compute({}, obs, T0)
    assert find(status["conditions"], "Ready")["reason"] == "ApplyFailed"  # type: ignore[index]
    assert ("Warning", "ApplyFailed") in [(e.type, e.reason) for e in events({}, status, obs)]


def test_dead_letter_status_is_preserved() -> None:
    obs = Observation(generation=1, image=IMAGE, rollout=_complete())
    status = compute({"deadLetter": {"count": 4}}, obs, T0)
    assert status["deadLetter"] == {"count": 4}
