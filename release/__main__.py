"""`python -m release image NAME --python-image BASE@sha256:… --tag REPO:VERSION` and
`python -m release manifests --operator-image REPO@sha256:…` (run from the checkout)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from release import image, manifests
from release.refs import NotPinned

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("image", help="build and push Dockerfile.NAME on a base pinned by digest")
    build.add_argument("name", choices=["operator", "worker"])
    build.add_argument("--python-image", required=True, help="the base, NAME@sha256:<digest>")
    build.add_argument("--tag", required=True, help="where to push, e.g. ghcr.io/org/digest-operator:0.1.0")
    build.add_argument("--builder", default="docker", help="the docker CLI (with buildx) to run")
    build.add_argument("--context", type=Path, default=ROOT)
    pin = commands.add_parser("manifests", help="pin the installation's operator image by digest (in place)")
    pin.add_argument("--operator-image", required=True, help="the operator image, REPO@sha256:<digest>")
    pin.add_argument("--kustomization", type=Path, default=ROOT / "manifests" / "kustomization.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "image":
            ref = image.build(args.builder, args.context / f"Dockerfile.{args.name}", args.context,
                              args.python_image, args.tag)
            print(ref)
        else:
            for directory, images in manifests.release(args.kustomization, args.operator_image).items():
                print(f"{directory}: {', '.join(images)}")
    except NotPinned as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 2
    except (manifests.ReleaseError, subprocess.CalledProcessError) as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
