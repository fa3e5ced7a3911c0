"""The wheel ships the seven `digest_*` packages (api, operator, worker, dlq, emulator, cluster, cli), never
`operator`, and the `digestctl` script."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support.samples import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells where it is
    assert uv, "run the tests with `uv run` (README)"
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("*.whl")
    return path


def test_wheel_has_only_the_project_import_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"digest_api", "digest_operator", "digest_worker", "digest_dlq", "digest_sbemulator",
                   "digest_cluster", "digest_cli"}
    assert "digest_api/spec.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "digestctl = digest_cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_stdlib_operator_module_is_not_shadowed() -> None:
    import operator

    assert hasattr(operator, "itemgetter")
    assert not (ROOT / "operator" / "__init__.py").exists()
