"""prometheus.yml and every rule file pass Debian's promtool (2.42), and every alert's unit tests pass."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from prom import PROMETHEUS_DIR, binary

pytestmark = pytest.mark.integration  # every test here starts a process

RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.rules.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))


def promtool(*args):
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, check=False, cwd=PROMETHEUS_DIR)


def test_prometheus_yml_is_valid():
    result = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_is_valid(rules):
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests", TEST_FILES, ids=lambda p: p.name)
def test_rule_unit_tests_pass(tests):
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def _alerts():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    yield path, rule


def test_every_alert_is_unit_tested_and_every_rule_file_has_tests():
    tested = {name for path in TEST_FILES for name in re.findall(r"alertname: (\w+)", path.read_text())}
    assert {rule["alert"] for _, rule in _alerts()} <= tested
    assert {p.name.replace(".rules.yml", "") for p in RULE_FILES} == {
        p.name.replace(".test.yml", "") for p in TEST_FILES
    }


@pytest.mark.parametrize(("path", "rule"), list(_alerts()), ids=lambda v: v["alert"] if isinstance(v, dict) else "")
def test_every_alert_says_how_bad_what_why_and_where_to_look(path, rule):
    assert rule["labels"]["severity"] in ("page", "ticket")
    assert {"summary", "description", "runbook", "runbook_url", "dashboard"} <= set(rule["annotations"])
    runbook, anchor = rule["annotations"]["runbook_url"].split("#")
    headings = re.findall(r"^## (\S+)", (PROMETHEUS_DIR.parent / runbook).read_text(), flags=re.M)
    assert anchor in {heading.lower() for heading in headings}, f"{anchor} is not a heading of {runbook}"
    assert rule["annotations"]["dashboard"].startswith("http://localhost:3000/d/")
