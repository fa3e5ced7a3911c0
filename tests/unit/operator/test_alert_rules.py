"""The rendered dead-letter alert through the real `promtool` (Debian's `prometheus` package): the rule file is
valid, and the promtool unit tests shipped in manifests/monitoring/alert-tests/ pass against the rendering of the
sample pipeline (and fail against a wrong rendering)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from digest_api.parse import parse_pipeline
from digest_operator.render import render_children
from tests.support.samples import load, with_path

ALERT_TESTS = Path(__file__).resolve().parents[3] / "manifests" / "monitoring" / "alert-tests"
RULES = "team-digest.rules.yaml"
TESTS = "dead-letter-alert.test.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: apt-get install prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def _rendered_rule_spec(body: dict[str, Any]) -> dict[str, Any]:
    pipeline = parse_pipeline(with_path(body, "metadata.uid", "0b6f3c9e-1111-2222-3333-444455556666"))
    (rule,) = [o for o in render_children(pipeline, pipeline.image) if o["kind"] == "PrometheusRule"]
    spec: dict[str, Any] = rule["spec"]
    return spec


def _suite_with(spec: dict[str, Any], directory: Path) -> Path:
    (directory / RULES).write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(ALERT_TESTS / TESTS, directory / TESTS)
    return directory / TESTS


def test_the_shipped_rule_file_is_the_rendering_of_the_sample_and_promtool_accepts_it() -> None:
    assert yaml.safe_load((ALERT_TESTS / RULES).read_text()) == _rendered_rule_spec(load())
    checked = _promtool("check", "rules", str(ALERT_TESTS / RULES))
    assert checked.returncode == 0 and "SUCCESS: 1 rules found" in checked.stdout, checked.stdout + checked.stderr


def test_the_shipped_promtool_cases_pass_on_the_rendering(tmp_path: Path) -> None:
    ran = _promtool("test", "rules", str(_suite_with(_rendered_rule_spec(load()), tmp_path)))
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_cases_catch_a_wrong_for_a_wrong_selector_and_a_sum_instead_of_max(tmp_path: Path) -> None:
    good = _rendered_rule_spec(load())
    rule = good["groups"][0]["rules"][0]
    broken = [
        {**rule, "for": "1m"},
        {**rule, "expr": rule["expr"].replace('pipeline="team-digest"', 'pipeline=~".+"')},
        {**rule, "expr": rule["expr"].replace("max(", "sum(")},
    ]
    for index, wrong in enumerate(broken):
        directory = tmp_path / str(index)
        directory.mkdir()
        spec = {"groups": [{**good["groups"][0], "rules": [wrong]}]}
        ran = _promtool("test", "rules", str(_suite_with(spec, directory)))
        assert ran.returncode != 0, (wrong, ran.stdout)
