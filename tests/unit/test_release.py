"""The release path: references must be pinned by digest; `release manifests` pins the operator image in the
kustomization (and every overlay renders it), drops the checkout's checkov skip, and refuses a tag."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from digest_cluster import install
from release import image, manifests
from release.__main__ import main
from release.refs import NotPinned, split_pinned
from tests.support import checkov_scan
from tests.support.samples import ROOT

DIGEST = "sha256:" + hashlib.sha256(b"a release of the operator image").hexdigest()
REPO = "registry.example.com/team/digest-operator"


def test_only_references_with_a_sha256_digest_are_pinned() -> None:
    assert split_pinned(f"{REPO}@{DIGEST}") == (REPO, DIGEST)
    assert split_pinned(f"{REPO}:0.2.0@{DIGEST}") == (REPO, DIGEST)  # the digest decides; the tag goes
    assert split_pinned(f"127.0.0.1:5000/python@{DIGEST}") == ("127.0.0.1:5000/python", DIGEST)
    assert split_pinned(f"127.0.0.1:5000/python:3.11@{DIGEST}") == ("127.0.0.1:5000/python", DIGEST)
    for ref in (f"{REPO}:0.2.0", REPO, f"{REPO}@{DIGEST[:-1]}", f"{REPO}@{DIGEST.upper()}",
                f"{REPO}@sha512:{'a' * 64}", f"@{DIGEST}"):
        with pytest.raises(NotPinned):
            split_pinned(ref)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what `kubectl kustomize` reads: manifests/, crds/ and overlays/."""
    for folder in ("manifests", "crds", "overlays"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_release_pins_the_operator_by_digest_in_the_kustomization_and_every_overlay(checkout: Path) -> None:
    kustomization = checkout / "manifests" / "kustomization.yaml"
    seen = manifests.release(kustomization, f"{REPO}:0.2.0@{DIGEST}")
    assert set(seen) == {checkout / "manifests", checkout / "overlays" / "webhook",
                         checkout / "overlays" / "webhook" / "cert-manager"}
    for directory in seen:  # rendered again here, not taken from the release's own check
        assert manifests.operator_images(manifests.kustomize(directory)) == [f"{REPO}@{DIGEST}"]
    document = yaml.safe_load(kustomization.read_text())
    assert document["images"] == [{"name": "digest-operator", "newName": REPO, "digest": DIGEST}]
    assert manifests.UNRELEASED not in kustomization.read_text()
    assert kustomization.read_text().startswith("# The operator installation")  # the instructions stay
    # the cluster tier's install overlay still finds the image name the base renders
    assert install.image_name(checkout / "overlays" / "webhook") == REPO


def test_checkov_skips_the_digest_check_only_before_the_release(checkout: Path, tmp_path: Path) -> None:
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    (scanned / "checkout.yaml").write_text(subprocess.run(
        [manifests.kubectl(), "kustomize", str(checkout / "manifests")], capture_output=True, text=True,
        check=True).stdout)
    manifests.release(checkout / "manifests" / "kustomization.yaml", f"{REPO}@{DIGEST}")
    (scanned / "released.yaml").write_text(subprocess.run(
        [manifests.kubectl(), "kustomize", str(checkout / "manifests")], capture_output=True, text=True,
        check=True).stdout)
    report = json.loads(subprocess.run(
        [shutil.which("checkov", path=str(Path(manifests.kubectl()).parent)) or "checkov", "--directory",
         str(scanned), "--framework", "kubernetes", "--check", "CKV_K8S_43", "--output", "json", "--skip-download",
         "--soft-fail"], capture_output=True, text=True, check=False,
        env={**os.environ, **checkov_scan.OFFLINE}).stdout)
    found = checkov_scan.outcomes(report, {"checkout.yaml": "checkout", "released.yaml": "released"})
    assert [s[0] for s in found["checkout"].skipped] == ["CKV_K8S_43"] and not found["checkout"].failed
    assert found["released"].passed >= 1 and not found["released"].failed and not found["released"].skipped


def test_a_tag_only_operator_image_is_refused_and_nothing_is_written(
        checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kustomization = checkout / "manifests" / "kustomization.yaml"
    before = kustomization.read_text()
    assert main(["manifests", "--operator-image", f"{REPO}:0.2.0", "--kustomization", str(kustomization)]) == 2
    assert "not pinned by digest" in capsys.readouterr().err
    assert kustomization.read_text() == before


def test_pin_needs_exactly_one_operator_image_and_keeps_other_entries() -> None:
    other = {"name": "sidecar", "newTag": "1"}
    pinned = manifests.pin({"images": [other, {"name": "digest-operator", "newTag": "0.1.0"}],
                            "patches": [{"path": "keep.yaml"}]}, f"{REPO}@{DIGEST}")
    assert pinned["images"] == [other, {"name": "digest-operator", "newName": REPO, "digest": DIGEST}]
    assert pinned["patches"] == [{"path": "keep.yaml"}]
    with pytest.raises(manifests.ReleaseError):
        manifests.pin({"images": [other]}, f"{REPO}@{DIGEST}")


def test_an_image_release_builds_on_a_pinned_base_and_reports_the_pushed_digest(tmp_path: Path) -> None:
    base = f"python:3.11-slim@{DIGEST}"
    argv = image.build_argv("docker", ROOT / "Dockerfile.operator", ROOT, base, f"{REPO}:0.2.0",
                            tmp_path / "meta.json")
    assert argv[argv.index("--build-arg") + 1] == f"PYTHON_IMAGE={base}"
    assert "--push" in argv and "ALLOW_UNPINNED_BASE=1" not in " ".join(argv)
    with pytest.raises(NotPinned):
        image.build_argv("docker", ROOT / "Dockerfile.operator", ROOT, "python:3.11-slim", f"{REPO}:0.2.0",
                         tmp_path / "meta.json")
    assert image.pushed_ref(f"{REPO}:0.2.0", {"containerimage.digest": DIGEST}) == f"{REPO}@{DIGEST}"
    with pytest.raises(NotPinned):
        image.pushed_ref(f"{REPO}:0.2.0", {})
