"""`digestctl render`: exactly the objects the operator would apply; clear errors with field paths."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from digest_cli import main
from tests.support.samples import SAMPLES, minimal, with_path

SAMPLE = SAMPLES / "digest_v1alpha1_digestpipeline.yaml"


def test_render_prints_every_child_as_yaml() -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["NetworkPolicy", "ServiceAccount", "ConfigMap", "TriggerAuthentication", "Deployment",
                     "ScaledObject", "CronJob", "PodMonitor", "PrometheusRule"]


def test_render_json_is_a_list() -> None:
    result = CliRunner().invoke(main, ["render", "-f", str(SAMPLE), "-o", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["kind"] == "List"


def test_render_reads_several_documents_from_stdin() -> None:
    docs = yaml.safe_dump_all([minimal("one"), minimal("two")])
    result = CliRunner().invoke(main, ["render", "-f", "-"], input=docs)
    assert result.exit_code == 0
    names = {doc["metadata"]["name"] for doc in yaml.safe_load_all(result.stdout) if doc["kind"] == "Deployment"}
    assert names == {"one-worker", "two-worker"}


def test_invalid_pipeline_exits_1_with_field_paths_on_stderr(tmp_path: Path) -> None:
    bad = with_path(with_path(minimal(), "spec.scaling.minReplicas", 9), "spec.scaling.maxReplicas", 3)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "spec.scaling: minReplicas (9) must be less than or equal to maxReplicas (3)" in result.stderr
    assert "Traceback" not in result.stderr


def test_tag_only_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text(yaml.safe_dump(with_path(minimal(), "spec.image", "registry.example.com/worker:latest")))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 1
    assert "spec.image: registry.example.com/worker:latest is not pinned by digest (TagNotAllowed)" in result.stderr


def test_tag_under_resolve_needs_a_digest_to_render_offline(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    body = with_path(minimal(), "spec.image", "registry.example.com/worker:2.0")
    path.write_text(yaml.safe_dump(with_path(body, "spec.imagePolicy", {"mode": "Track"})))
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 1
    assert "resolves from the registry at run time (imagePolicy Track)" in result.stderr
    assert "registry.example.com/worker:2.0@sha256:<digest>" in result.stderr


def test_broken_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [unclosed\n")
    result = CliRunner().invoke(main, ["render", "-f", str(path)])
    assert result.exit_code == 1 and "not valid YAML" in result.stderr
