"""The Kopf settings the operator runs with."""

from __future__ import annotations

import kopf

from digest_operator.handlers import PIPELINE_LIST_PAGE, configure
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
