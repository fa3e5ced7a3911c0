"""Rendering without a cluster (`digestctl render`, like `helm template`): pinned pipelines only, every problem
reported with its field path."""

from __future__ import annotations

from typing import Any

from digest_api.parse import SpecError, parse_pipeline
from digest_operator.render import render_children


def render_documents(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Render every pipeline; raises SpecError (paths prefixed with the document index when there are several)."""
    objects: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    for index, doc in enumerate(documents):
        prefix = f"document {index}: " if len(documents) > 1 else ""
        if not isinstance(doc, dict):
            problems.append((f"{prefix}(root)", "is not a mapping"))
            continue
        try:
            pipeline = parse_pipeline(doc)
        except SpecError as exc:
            problems.extend((prefix + path, message) for path, message in exc.problems)
            continue
        image = pipeline.image
        if not image.pinned:
            pin = f"{image.name}:{image.tag or 'latest'}@sha256:<digest>"
            if pipeline.spec.image_policy.mode == "Require":
                message = (f"{image} is not pinned by digest (TagNotAllowed); the operator refuses tag-only images. "
                           f"Pin it as {pin}")
            else:
                message = (f"{image} is a tag, which the operator resolves from the registry at run time "
                           f"(imagePolicy {pipeline.spec.image_policy.mode}); to render offline, pin it as {pin}")
            problems.append((prefix + "spec.image", message))
            continue
        objects.extend(render_children(pipeline, image))
    if problems:
        raise SpecError(problems)
    return objects
