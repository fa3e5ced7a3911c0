"""Real KEDA in the local cluster, installed the way its docs do: KEDA's own kustomization (`config/default` of the
module the binaries were built from: CRDs, RBAC, the operator, the metrics API server registered as the
`v1beta1.external.metrics.k8s.io` APIService, the admission webhooks) with two changes made by a kustomize overlay:

- the three images are one image built here from the three static binaries, pinned by digest;
- the local CA is mounted at `/custom/ca` in the operator (KEDA adds every certificate there to the pool its
  scalers use), so the Service Bus scaler trusts the emulator's HTTPS management endpoint.

KEDA's operator makes its own certificates (`--enable-cert-rotation`) and injects the CA into the APIService and
the webhook configuration, as in a production install.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from digest_cluster import images
from digest_cluster.cluster import Cluster, ClusterError, build
from digest_cluster.install import is_true, split_digest_ref, wait_for

NAMESPACE = "keda"
IMAGE_REPO = "keda"
UPSTREAM_IMAGES = ("ghcr.io/kedacore/keda", "ghcr.io/kedacore/keda-metrics-apiserver",
                   "ghcr.io/kedacore/keda-admission-webhooks")
BINARIES = ("keda", "keda-adapter", "keda-admission-webhooks")
DEPLOYMENTS = ("keda-operator", "keda-metrics-apiserver", "keda-admission")
APISERVICE = "v1beta1.external.metrics.k8s.io"
CA_CONFIGMAP = "keda-custom-ca"
USER = "1000:1000"


def keda_dir(progress: Callable[[str], None] = lambda line: None) -> Path:
    """The cached KEDA build (binaries, `config/`), built when missing (about 10 minutes cold)."""
    for directory in build("keda", progress):
        if all((directory / name).exists() for name in BINARIES) and (directory / "config").is_dir():
            return directory
    raise ClusterError("the KEDA build did not produce its binaries and config/")


def image(store: images.ImageStore, directory: Path) -> str:
    """One image with KEDA's three binaries (each Deployment runs its own as the command)."""
    return images.binaries_image(store, IMAGE_REPO, [directory / name for name in BINARIES],
                                 entrypoint="/keda", user=USER)


def kustomization(config: Path, ref: str, directory: Path) -> dict[str, Any]:
    """The overlay of KEDA's `config/default` (at `config`) written into `directory` (pure)."""
    name, digest = split_digest_ref(ref)
    ca_volume = {"name": "custom-ca", "configMap": {"name": CA_CONFIGMAP}}
    ca_mount = {"name": "custom-ca", "mountPath": "/custom/ca", "readOnly": True}
    operator_patch = [
        {"op": "add", "path": "/spec/template/spec/volumes/-", "value": ca_volume},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-", "value": ca_mount},
        # pinned by digest: nothing to pull again
        {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "IfNotPresent"},
    ]
    pull_policy = [{"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy",
                    "value": "IfNotPresent"}]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(config / "default", directory)],
        "images": [{"name": upstream, "newName": name, "digest": digest} for upstream in UPSTREAM_IMAGES],
        "configMapGenerator": [{"name": CA_CONFIGMAP, "namespace": NAMESPACE, "files": ["ca.crt"]}],
        "patches": [
            {"target": {"kind": "Deployment", "name": "keda-operator"}, "patch": yaml.safe_dump(operator_patch)},
            {"target": {"kind": "Deployment", "name": "keda-metrics-apiserver"}, "patch": yaml.safe_dump(pull_policy)},
            {"target": {"kind": "Deployment", "name": "keda-admission"}, "patch": yaml.safe_dump(pull_policy)},
        ],
    }


def install(cluster: Cluster, ref: str, config: Path, ca_pem: bytes, within: float = 240) -> None:
    """`kubectl apply --server-side -k` of the overlay, then wait for the three Deployments and for the API
    server to serve external metrics through KEDA (APIService Available)."""
    with tempfile.TemporaryDirectory(prefix="digest-keda-") as tmp:
        directory = Path(tmp)
        (directory / "ca.crt").write_bytes(ca_pem)
        (directory / "kustomization.yaml").write_text(
            yaml.safe_dump(kustomization(config, ref, directory), sort_keys=False))
        # the tier may have applied the same CRDs from the reference copy: KEDA's install owns them from here on
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(directory), timeout=within)
    for deployment in DEPLOYMENTS:
        cluster.kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{deployment}",
                        f"--timeout={int(within)}s", timeout=within + 10)
    wait_for(cluster, ("apiservice", APISERVICE), lambda o: is_true(o, "Available"), within,
             f"APIService {APISERVICE} Available")
