"""The Kopf settings the operator runs with."""

from __future__ import annotations

import kopf
import pytest

from digest_operator.handlers import PIPELINE_LIST_PAGE, configure, register
from digest_operator.main import start_operator
from digest_operator.runtime import Runtime


def test_kopf_lists_pipelines_in_pages_and_watches_in_whole_seconds() -> None:
    """Kopf lists again whenever a watch ends: a thousand pipelines must not come as one response held whole."""
    settings = kopf.OperatorSettings()
    assert settings.watching.chunk_size is None  # Kopf's default: one response
    configure(settings, Runtime())
    assert settings.watching.chunk_size == PIPELINE_LIST_PAGE
    assert 0 < PIPELINE_LIST_PAGE <= 500
    assert isinstance(settings.watching.server_timeout, int) and settings.watching.server_timeout >= 1
    assert settings.persistence.finalizer == "digest.dev/finalizer"


def test_no_pipeline_has_a_kopf_timer_or_daemon_and_deletion_keeps_the_finalizer() -> None:
    """Kopf keeps the whole body of every object that has a timer or a daemon (about 48 KB per pipeline, 48 MiB at a
    thousand): resyncs and wake-ups are the operator's own work queue instead. The finalizer stays, from the delete
    handler: a deleted pipeline leaves the queue on the replica that acts."""
    registry = kopf.OperatorRegistry()
    runtime = Runtime()
    register(registry, runtime)
    assert list(registry._spawning.get_all_handlers()) == []  # Kopf's registry of timers and daemons
    deletion = [h for h in registry._changing.get_all_handlers() if h.reason == kopf.Reason.DELETE]
    assert deletion and all(h.requires_finalizer for h in deletion)
    assert runtime.queue is not None


async def test_namespaced_peering_is_refused_before_anything_starts() -> None:
    """The work queue follows cluster-wide peering (ClusterKopfPeering) only; Kopf's namespaced peering would leave
    it acting while Kopf is paused."""
    with pytest.raises(ValueError, match="--standalone"):
        async with start_operator(Runtime(), namespaces=["team-a"], peering="digest-operator"):
            pass
