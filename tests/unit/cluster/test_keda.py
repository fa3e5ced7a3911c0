"""KEDA's install overlay: its own kustomization with the images replaced by ours (by digest) and the local CA
mounted where KEDA reads extra CAs; rendered by the real kustomize in kubectl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from digest_cluster.cluster import kubectl_binary
from digest_cluster.keda import CA_CONFIGMAP, DEPLOYMENTS, kustomization

REF = "127.0.0.1:5000/keda@sha256:" + "ab" * 32


def _fake_keda_config(root: Path) -> Path:
    """A two-Deployment stand-in for KEDA's config/default (same names and images as upstream)."""
    default = root / "config" / "default"
    default.mkdir(parents=True)
    docs = []
    for name, image in (("keda-operator", "ghcr.io/kedacore/keda:main"),
                        ("keda-metrics-apiserver", "ghcr.io/kedacore/keda-metrics-apiserver:main"),
                        ("keda-admission", "ghcr.io/kedacore/keda-admission-webhooks:main")):
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "keda"},
                     "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                         "metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": name, "image": image, "imagePullPolicy": "Always",
                                                  "volumeMounts": [{"name": "c", "mountPath": "/certs"}]}],
                                  "volumes": [{"name": "c", "emptyDir": {}}]}}}})
    (default / "deployments.yaml").write_text(yaml.safe_dump_all(docs))
    (default / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["deployments.yaml"]}))
    return root / "config"


def test_overlay_pins_every_keda_image_and_mounts_the_ca_in_the_operator(tmp_path: Path) -> None:
    config = _fake_keda_config(tmp_path / "keda")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nlocal\n-----END CERTIFICATE-----\n")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization(config, REF, overlay)))
    rendered = subprocess.run([kubectl_binary(), "kustomize", str(overlay)], capture_output=True, text=True,
                              check=True).stdout
    objects = {o["metadata"]["name"]: o for o in yaml.safe_load_all(rendered)}
    assert set(DEPLOYMENTS) <= set(objects)
    for name in DEPLOYMENTS:
        (container,) = objects[name]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == REF and container["imagePullPolicy"] == "IfNotPresent"
    operator = objects["keda-operator"]["spec"]["template"]["spec"]
    ca_map = next(n for n in objects if n.startswith(CA_CONFIGMAP))  # the generator's hashed name
    assert {"name": "custom-ca", "configMap": {"name": ca_map}} in operator["volumes"]
    assert {"name": "custom-ca", "mountPath": "/custom/ca", "readOnly": True} in operator["containers"][0][
        "volumeMounts"]
    assert "local" in objects[ca_map]["data"]["ca.crt"]
