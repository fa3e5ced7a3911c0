"""The CI's checkov scan fails on a failed check and on a skip without a reason, and names the target: a real
checkov run over a small checkout made here."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import checkov_scan

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  annotations:
    checkov.io/skip1: CKV_K8S_11
    checkov.io/skip2: "CKV_K8S_43=the sample's image is a tag"
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - {name: app, image: "registry.example.com/app:1.0"}
"""


def test_failed_checks_and_unexplained_skips_fail_the_scan(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifests" / "samples").mkdir(parents=True)
    (tmp_path / "manifests" / "deployment.yaml").write_text(DEPLOYMENT)
    (tmp_path / "manifests" / "kustomization.yaml").write_text(textwrap.dedent("""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namespace: apps
        resources: [deployment.yaml]
        """))
    (tmp_path / "overlays").mkdir()
    (tmp_path / "Dockerfile.app").write_text("FROM python:latest\nUSER 10001\n")
    assert checkov_scan.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    kustomized = next(line for line in lines if line.startswith("kubectl kustomize manifests/:"))
    assert " failed" in kustomized and " 0 failed" not in kustomized and "2 skipped" in kustomized
    assert "  FAILED CKV_K8S_8 Deployment.apps.app: Liveness Probe Should be Configured" in lines
    assert "  skipped CKV_K8S_43 Deployment.apps.app: the sample's image is a tag" in lines
    assert "checkov_scan: the skip of CKV_K8S_11 on Deployment.apps.app gives no reason" in lines
    dockerfile = next(line for line in lines if line.startswith("Dockerfile.app:"))
    assert " 0 failed" not in dockerfile
    assert any(line.startswith("  FAILED CKV_DOCKER_7 ") for line in lines)
