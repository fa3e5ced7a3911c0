"""Installing the project into the local cluster as users do: `kubectl apply --server-side -k` of the shipped
kustomization with the operator image set by digest (what `kustomize edit set image` writes), then a pipeline."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from digest_cluster.cluster import Cluster, ClusterError

OPERATOR_NAMESPACE = "digest-system"


def split_digest_ref(ref: str) -> tuple[str, str]:
    """`registry/name@sha256:…` → (`registry/name`, `sha256:…`); a tag-only reference is refused."""
    if "@sha256:" not in ref:
        raise ValueError(f"{ref!r} is not pinned by digest")
    name, digest = ref.split("@", 1)
    return name, digest


def overlay(base: Path, operator_ref: str, directory: Path) -> Path:
    """A kustomization in `directory` that takes `base` (manifests/ or overlays/webhook/) and pins the operator
    image by digest; returns the directory for `kubectl apply -k`."""
    name, digest = split_digest_ref(operator_ref)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(base, directory)],
        "images": [{"name": image_name(base), "newName": name, "digest": digest}],
    }, sort_keys=False))
    return directory


def image_name(base: Path) -> str:
    """The operator image's name as `base` renders it: manifests/ maps the placeholder `digest-operator` to the
    published repository, so an overlay must match that name (an overlay of an overlay follows its resources)."""
    document = yaml.safe_load((base / "kustomization.yaml").read_text())
    for entry in document.get("images") or []:
        if entry.get("name") == "digest-operator":
            return str(entry.get("newName") or "digest-operator")
    for resource in document.get("resources") or []:
        candidate = (base / resource).resolve()
        if (candidate / "kustomization.yaml").exists():
            return image_name(candidate)
    return "digest-operator"


def install_operator(cluster: Cluster, base: Path, operator_ref: str, within: float = 180) -> str:
    """One `kubectl apply --server-side -k` of `base` with the operator pinned; waits for the rollout. Returns
    kubectl's output."""
    with tempfile.TemporaryDirectory(prefix="digest-install-") as tmp:
        applied = cluster.kubectl("apply", "--server-side", "-k", str(overlay(base, operator_ref, Path(tmp))),
                                  timeout=within).stdout
    cluster.kubectl("rollout", "status", "-n", OPERATOR_NAMESPACE, "deployment/digest-operator",
                    f"--timeout={int(within)}s", timeout=within + 10)
    return applied


def apply_objects(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=digest-cluster", "-f", "-",
                    input="\n---\n".join(json.dumps(o) for o in objects))


def get(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False, timeout=30)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise ClusterError(f"kubectl get {' '.join(args)}: {result.stderr.strip()}")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_for(cluster: Cluster, args: tuple[str, ...], predicate: Any, within: float, what: str) -> dict[str, Any]:
    """Poll `kubectl get ARGS -o json` until `predicate(object)` holds (object may be None); fail naming `what`
    and the last object seen."""
    deadline = time.monotonic() + within
    last: dict[str, Any] | None = None
    while True:
        last = get(cluster, *args)
        if predicate(last):
            return last or {}
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}; last seen: "
                                 f"{json.dumps(last)[:4000]}")
        time.sleep(0.5)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or []:  # a new CRD's status has none yet
        if entry.get("type") == kind:
            found: dict[str, Any] = entry
            return found
    return None


def is_true(obj: dict[str, Any] | None, kind: str) -> bool:
    """Whether `obj` has condition `kind` with status True."""
    found = condition(obj, kind)
    return found is not None and found.get("status") == "True"


def wait_established(cluster: Cluster, crds: tuple[str, ...], within: float = 60) -> None:
    """Wait until each CRD is Established (`kubectl wait` errors on a CRD that has no status yet)."""
    for name in crds:
        wait_for(cluster, ("crd", name), lambda o: is_true(o, "Established"), within, f"CRD {name} Established")


def apply_crds(cluster: Cluster, files: list[Path]) -> None:
    """Server-side apply these CRD files and wait until every CRD they define is served."""
    args = ["apply", "--server-side", "--field-manager=digest-cluster"]
    for path in files:
        args += ["-f", str(path)]
    applied = cluster.kubectl(*args).stdout
    names = tuple(line.split()[0].split("/", 1)[1] for line in applied.splitlines()
                  if line.startswith("customresourcedefinition"))
    wait_established(cluster, names)
