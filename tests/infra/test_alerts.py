"""The alert rules (infra/prometheus/rules.yml) and the Grafana dashboard
(infra/grafana/ragstream.json), checked offline with promtool (Debian's prometheus 2.42,
installed into the venv by ./dev setup)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.registry import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra/prometheus"
RULES = PROM / "rules.yml"
DASHBOARD = ROOT / "infra/grafana/ragstream.json"
INSTALL = ("promtool is missing: ./dev setup installs it into .venv/bin (Debian's prometheus "
           "2.42.0+ds-5+deb12u1: `apt-get download prometheus=2.42.0+ds-5+deb12u1 && dpkg-deb -x prometheus_*.deb x` "
           "and copy x/usr/bin/promtool onto PATH)")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = Path(sys.prefix) / "bin" / "promtool"
    path = str(found) if found.is_file() else shutil.which("promtool")
    if not path:
        pytest.fail(INSTALL)
    return path


def run(promtool: str, *args: str, cwd: Path = PROM) -> str:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> set[str]:
    return {r["alert"] for r in rules() if "alert" in r}


def exported_names() -> set[str]:
    """Every sample name ragstream exports (ragstream/metrics.py, and Connect recovery's in
    infra/cdc.py), as Prometheus stores them."""
    import infra.cdc as cdc
    import ragstream.metrics as metrics
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names = {"ragstream_worker_restarts_total"}  # read from the supervisor's state file at scrape time
    for module in (metrics, cdc):
        for obj in vars(module).values():
            if isinstance(obj, MetricWrapperBase):
                names |= {obj._name + s for s in suffixes[obj._type]}
    return names


def used_names(expr: str) -> set[str]:
    return set(re.findall(r"\bragstream(?::[a-z0-9_]+)+|\bragstream_[a-z0-9_]+", expr))


# -- the rules ---------------------------------------------------------------------------------
def test_the_rules_parse(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", "rules.yml")


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "rules_test.yml")


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [c for t in yaml.safe_load((PROM / "rules_test.yml").read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts() - fires == set(), "alerts without a case where they fire"
    assert alerts() - quiet == set(), "alerts without a case where they must not fire"
    assert fires | quiet <= alerts(), "tests of alerts that do not exist"


def test_the_asked_for_alerts_exist() -> None:
    assert {"RagstreamStageStalled", "RagstreamLagGrowing", "RagstreamFreshnessBudgetBurnFast",
            "RagstreamFreshnessBudgetBurnSlow", "RagstreamDeadLetters", "RagstreamMilvusDown",
            "RagstreamBrokerDown"} <= alerts()


def test_the_rules_use_metrics_that_exist_and_stages_of_the_registry() -> None:
    exported = exported_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        unknown = used_names(rule["expr"]) - exported - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown} is neither exported nor recorded"
        for group in re.findall(r'stage=~?"([^"]+)"', rule["expr"]):
            assert set(group.split("|")) <= set(BY_NAME), (rule.get("alert") or rule.get("record"), group)


def test_every_alert_has_a_runbook_section() -> None:
    doc = (ROOT / "docs/operations.md").read_text().lower()
    for rule in rules():
        if "alert" in rule:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert f"### {anchor}" in doc.replace("`", ""), f"docs/operations.md has no section {anchor}"


def test_the_scrape_jobs_the_rules_name_are_configured() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    named = {m for r in rules() for m in re.findall(r'job="([^"]+)"', r["expr"])}
    assert named <= jobs
    assert config["rule_files"] == ["rules.yml"]


# -- the dashboard -----------------------------------------------------------------------------
def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def concrete(expr: str) -> str:
    """A dashboard query as Prometheus would receive it from Grafana."""
    for var, value in {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h", "$stage": ".*"}.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"an unknown variable in {expr}"
    return expr


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    group = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)} for i, (_, expr) in enumerate(queries)]}]}
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(group, sort_keys=False))
    assert f"SUCCESS: {len(queries)} rules found" in run(promtool, "check", "rules", "dashboard_rules.yml",
                                                           cwd=tmp_path)


def test_a_broken_query_would_be_caught(promtool: str, tmp_path: Path) -> None:
    bad = {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (stage (rate(x[1m]))"}]}]}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    done = subprocess.run([promtool, "check", "rules", "bad.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0


def test_the_dashboard_uses_metrics_that_exist() -> None:
    exported = exported_names() | {r["record"] for r in rules() if "record" in r}
    for where, expr in dashboard_queries():
        unknown = used_names(expr) - exported
        assert not unknown, f"{where}: {unknown}"


def test_the_dashboard_is_importable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "ragstream" and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for _, expr in dashboard_queries():
        for var in re.findall(r"\$([a-z]\w*)", expr):
            assert var in variables, var
