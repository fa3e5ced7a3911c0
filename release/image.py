"""Build and push a project image on a base pinned by digest, and report the pushed image by digest."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from release.refs import split_pinned


def build_argv(builder: str, dockerfile: Path, context: Path, python_image: str, tag: str,
               metadata_file: Path) -> list[str]:
    """`docker buildx build … --push` of `dockerfile` on `python_image`. Raises NotPinned for an unpinned base
    (the Dockerfile refuses it too, unless ALLOW_UNPINNED_BASE=1, which the release never passes)."""
    split_pinned(python_image)
    return [builder, "buildx", "build", "--file", str(dockerfile), "--build-arg", f"PYTHON_IMAGE={python_image}",
            "--tag", tag, "--push", "--metadata-file", str(metadata_file), str(context)]


def pushed_ref(tag: str, metadata: dict[str, object]) -> str:
    """`REPO@sha256:…` of the pushed image, from buildx's metadata file (`containerimage.digest`)."""
    digest = str(metadata.get("containerimage.digest") or "")
    last = tag.rsplit("/", 1)[-1]
    repo = tag[: len(tag) - len(last)] + last.split(":", 1)[0]
    name, pinned = split_pinned(f"{repo}@{digest}")
    return f"{name}@{pinned}"


def build(builder: str, dockerfile: Path, context: Path, python_image: str, tag: str) -> str:
    """Build and push; returns the pushed image by digest (the input of `release manifests`)."""
    with tempfile.TemporaryDirectory() as tmp:
        metadata_file = Path(tmp) / "metadata.json"
        subprocess.run(build_argv(builder, dockerfile, context, python_image, tag, metadata_file), check=True)
        metadata: dict[str, object] = json.loads(metadata_file.read_text())
    return pushed_ref(tag, metadata)
