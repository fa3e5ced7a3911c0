"""The Dockerfiles build only on a base pinned by digest (their own RUN check, run here in a real /bin/sh), install
the build tools and the runtime from the lock with hashes, and requirements/build.txt is the lock's `build` group."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from digest_cluster import images
from tests.support.samples import ROOT

DOCKERFILES = ["Dockerfile.operator", "Dockerfile.worker"]
HEX = "0123456789abcdef" * 4
STAND_IN = images.image_ref("127.0.0.1:5000", "python", f"sha256:{HEX}")
"""The reference the cluster tier passes: its Debian-built base, pinned by digest in its registry."""


def _instructions(name: str) -> list[tuple[str, str]]:
    return list(images._instructions((ROOT / name).read_text()))


def _base_check(name: str) -> str:
    """The build stage's first RUN: the check of PYTHON_IMAGE."""
    words = _instructions(name)
    build_stage = words[[w for w, _ in words].index("FROM") + 1:]
    assert build_stage[:2] == [("ARG", "PYTHON_IMAGE"), ("ARG", "ALLOW_UNPINNED_BASE=0")]
    assert build_stage[2][0] == "RUN"
    return build_stage[2][1]


def _run_check(script: str, python_image: str, allow: str = "0") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON_IMAGE": python_image,
           "ALLOW_UNPINNED_BASE": allow}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_refuses_a_base_that_is_not_pinned_by_digest(name: str) -> None:
    script = _base_check(name)
    for pinned in (f"python:3.11-slim@sha256:{HEX}", f"docker.io/library/python@sha256:{HEX}", STAND_IN):
        assert _run_check(script, pinned).returncode == 0, pinned
    for unpinned in ("python:3.11-slim", "python", f"python:3.11-slim@sha256:{HEX[:-1]}",
                     f"python@sha256:{HEX.upper()}", f"python@sha256:{HEX}0", f"python@sha512:{HEX}"):
        refused = _run_check(script, unpinned)
        assert refused.returncode == 1, unpinned
        assert f"PYTHON_IMAGE={unpinned} is not pinned by digest" in refused.stderr
    local = _run_check(script, "python:3.11-slim", allow="1")  # a development build, said explicitly
    assert local.returncode == 0 and "unpinned base python:3.11-slim" in local.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_pip_install_takes_hashes_except_the_projects_own_wheel(name: str) -> None:
    installs = [part.strip() for word, rest in _instructions(name) if word == "RUN"
                for part in rest.split("&&") if "pip install" in part]
    assert installs, "the images install with pip"
    for install in installs:
        assert "--require-hashes -r " in install or install.endswith("--no-deps /dist/*.whl"), install
    runs = " ".join(rest for word, rest in _instructions(name) if word == "RUN")
    assert "--require-hashes -r /tmp/build-requirements.txt" in runs
    assert ("COPY", "requirements/build.txt /tmp/build-requirements.txt") in _instructions(name)
    assert "uv build" not in runs  # would fetch hatchling unhashed; pip wheel uses the hashed one


def _requirements(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name → (version, hashes) of a `uv export` requirements file."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        assert version, f"{spec} is not pinned"
        found[name] = (version, {o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")})
    return found


def test_requirements_build_txt_is_the_lock_files_build_group_with_its_hashes() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[tuple[str, str], dict[str, Any]] = {(p["name"], p["version"]): p for p in lock["package"]}
    versions: dict[str, list[str]] = {}
    for name, version in packages:
        versions.setdefault(name, []).append(version)

    def locked(dependency: dict[str, Any]) -> dict[str, Any]:
        """The package a dependency entry names (uv adds `version` where a name is locked more than once)."""
        name = dependency["name"]
        version = dependency.get("version") or versions[name][0]
        assert "version" in dependency or len(versions[name]) == 1, name
        return packages[(name, version)]

    project = packages[("digest-pipelines", "0.1.0")]
    closure: dict[str, dict[str, Any]] = {}
    todo = [locked(d) for d in project["dev-dependencies"]["build"]]
    while todo:
        package = todo.pop()
        if closure.setdefault(package["name"], package) is package:
            todo += [locked(d) for d in package.get("dependencies") or []]
    required = _requirements(ROOT / "requirements" / "build.txt")
    assert set(required) == set(closure) and {"uv", "hatchling"} <= set(required)
    for name, (version, hashes) in required.items():
        package = closure[name]
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert version == package["version"], name
        assert hashes == {str(f["hash"]) for f in files} and hashes, name
