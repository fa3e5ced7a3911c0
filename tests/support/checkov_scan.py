"""checkov over what the project ships: every rendered sample (`digestctl render -f manifests/samples/*.yaml`),
`kubectl kustomize` of manifests/ and of every overlay in overlays/, and both Dockerfiles (manifests/monitoring/ holds
only a PodMonitor, for which checkov has no check).

`python -m tests.support.checkov_scan` (called by .ci/run) prints passed/failed/skipped per target, every failed
check, and every skip with its reason; it exits 1 on any failed check or on a skip without a reason. Skips are
annotated in place: `checkov.io/skipN: CKV_…=reason` in Kubernetes metadata, `#checkov:skip=CKV_…:reason` in a
Dockerfile. checkov runs offline (no update check, nothing downloaded from its platform).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "True", "BC_SKIP_MAPPING": "TRUE"}
NO_REASON = "No comment provided"
"""What checkov records for a skip annotation without `=reason`."""


@dataclass
class Outcome:
    """The checks of one target."""

    passed: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(check id, resource, check name)"""
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    """(check id, resource, reason)"""

    @property
    def unexplained(self) -> list[tuple[str, str, str]]:
        return [s for s in self.skipped if not s[2].strip() or s[2] == NO_REASON]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"checkov_scan: {name} not found (uv sync --frozen --all-extras)")
    return found


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"checkov_scan: `{' '.join(argv)}` exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def kustomizations(root: Path = ROOT) -> list[Path]:
    """manifests/ and every kustomization in overlays/ (components are not rendered alone)."""
    overlays = sorted(p.parent for p in (root / "overlays").rglob("kustomization.yaml"))
    return [root / "manifests", *overlays]


def stage(directory: Path, root: Path = ROOT) -> dict[str, str]:
    """Write every target into `directory` (one file each); returns file name → target label."""
    targets: dict[str, str] = {}
    digestctl = _tool("digestctl")
    for sample in sorted((root / "manifests" / "samples").glob("*.yaml")):
        name = f"render-{sample.stem}.yaml"
        (directory / name).write_text(_run([digestctl, "render", "-f", str(sample)]))
        targets[name] = f"digestctl render -f {sample.relative_to(root)}"
    kubectl = _tool("kubectl")
    for kustomization in kustomizations(root):
        rel = kustomization.relative_to(root)
        name = "kustomize-" + "-".join(rel.parts) + ".yaml"
        (directory / name).write_text(_run([kubectl, "kustomize", str(kustomization)]))
        targets[name] = f"kubectl kustomize {rel}/"
    for dockerfile in sorted(root.glob("Dockerfile.*")):
        shutil.copyfile(dockerfile, directory / dockerfile.name)
        targets[dockerfile.name] = dockerfile.name
    return targets


def outcomes(report: Any, targets: Mapping[str, str]) -> dict[str, Outcome]:
    """checkov's JSON report (one framework: an object; several: a list) → the outcome per target label."""
    found = {label: Outcome() for label in targets.values()}
    for framework in report if isinstance(report, list) else [report]:
        results = framework.get("results") or {}
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in results.get(kind) or []:
                label = targets.get(Path(str(check.get("file_path", ""))).name)
                if label is None:
                    raise SystemExit(f"checkov_scan: a result for an unknown file: {check.get('file_path')}")
                outcome = found[label]
                if kind == "passed_checks":
                    outcome.passed += 1
                elif kind == "failed_checks":
                    outcome.failed.append((check["check_id"], check["resource"], check.get("check_name", "")))
                else:
                    reason = str((check.get("check_result") or {}).get("suppress_comment") or "")
                    outcome.skipped.append((check["check_id"], check["resource"], reason))
    return found


def scan(directory: Path, targets: Mapping[str, str]) -> dict[str, Outcome]:
    """One checkov run (Kubernetes and Dockerfile frameworks) over the staged targets."""
    argv = [_tool("checkov"), "--directory", str(directory), "--framework", "kubernetes", "dockerfile",
            "--output", "json", "--skip-download", "--soft-fail"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, **OFFLINE})
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise SystemExit(f"checkov_scan: checkov exited {done.returncode} without a JSON report:\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}") from None
    return outcomes(report, targets)


def summary(found: Mapping[str, Outcome]) -> Iterable[str]:
    for label, outcome in found.items():
        yield (f"{label}: {outcome.passed} passed, {len(outcome.failed)} failed, "
               f"{len(outcome.skipped)} skipped")
        for check_id, resource, name in outcome.failed:
            yield f"  FAILED {check_id} {resource}: {name}"
        for check_id, resource, reason in outcome.skipped:
            yield f"  skipped {check_id} {resource}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.checkov_scan", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        targets = stage(Path(tmp), args.root)
        found = scan(Path(tmp), targets)
    for line in summary(found):
        print(line)
    failed = sum(len(o.failed) for o in found.values())
    unexplained = [s for o in found.values() for s in o.unexplained]
    empty = [label for label, o in found.items() if o.passed == 0]
    for check_id, resource, _ in unexplained:
        print(f"checkov_scan: the skip of {check_id} on {resource} gives no reason")
    for label in empty:
        print(f"checkov_scan: no check ran on {label}")
    total = sum(o.passed for o in found.values())
    print(f"checkov: {total} passed, {failed} failed")
    return 1 if failed or unexplained or empty else 0


if __name__ == "__main__":
    sys.exit(main())
