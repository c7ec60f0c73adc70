"""Offline checks of the monitoring assets in k8s/monitoring (rules, scrape config, manifests, dashboard).

Needs promtool (Debian `prometheus`), kubectl (v1.27+, for its built-in kustomize v5) and the
`kubernetes-validate` package; each test skips without its tool, but fails instead in CI (conftest.require_binaries).

`python tests/test_monitoring_assets.py --write-prometheusrule` regenerates
k8s/monitoring/operator/prometheusrule.yaml from the rules file (the single source).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, require_binaries

MON = REPO / "k8s" / "monitoring"
RULES = MON / "rules" / "labscale.rules.yml"
RULES_TEST = MON / "rules" / "labscale.rules.test.yml"
PROM_CONFIG = MON / "prometheus.yml"
DASHBOARD = MON / "grafana" / "labscale-dashboard.json"
PROMETHEUS_RULE = MON / "operator" / "prometheusrule.yaml"
K8S_VERSION = "1.30.0"

# The metric contract the stages' telemetry emits (shared/labscale/telemetry).
STAGE_METRICS = {
    "labscale_stage_duration_seconds", "labscale_stage_items_total", "labscale_stage_input_tokens_total",
    "labscale_stage_output_tokens_total", "labscale_stage_output_tokens_per_second",
    "labscale_stage_peak_rss_bytes", "labscale_stage_peak_gpu_memory_bytes",
    "labscale_stage_estimated_cost_usd", "labscale_stage_success",
    "labscale_stage_last_success_timestamp_seconds", "labscale_score",
}
STUDY_METRICS = {
    "labscale_study_cost_usd", "labscale_study_budget_usd",
    "labscale_study_last_success_timestamp_seconds", "labscale_cell_score",
}
CONTRACT = STAGE_METRICS | STUDY_METRICS
METRIC_RE = re.compile(r"\blabscale_[a-z_]+")
ALERTS = {"LabscaleStageFailed", "LabscaleStudyOverBudget", "LabscaleScoreDropped", "LabscaleNoRecentSuccess"}
CRD_GROUPS = ("monitoring.coreos.com/",)


def need_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    require_binaries([] if path else [name], hint)
    return path


def promtool() -> str:
    return need_binary("promtool", "apt-get install prometheus")


def run_ok(cmd: list[str], cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}"
    return out


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = need_binary("kubectl", "kubectl >= 1.27 with built-in kustomize v5; Debian's kubernetes-client 1.20 is too old")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def k8s_validate(objs: list[dict[str, Any]]) -> None:
    """Strict schema check of every built-in kind (CRDs have no schema there)."""
    try:
        import kubernetes_validate
    except ImportError:
        require_binaries(["kubernetes-validate"], "pip install kubernetes-validate==1.37.0")
    for obj in objs:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        error = None
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except Exception as exc:  # jsonschema's ValidationError, or no schema for the kind
            error = f"{getattr(exc, 'message', exc)} at {list(getattr(exc, 'path', []))}"
        if error:  # fail outside the except: keeps the report to one line, not the whole schema
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error}")


def by_kind(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and query-variable queries."""
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def render_prometheus_rule() -> str:
    """The PrometheusRule, generated from the rules file: same groups, no second copy to edit."""
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "labscale", "namespace": "labscale", "labels": {"app.kubernetes.io/part-of": "labscale"}},
        "spec": {"groups": rule_groups()},
    }
    header = ("# GENERATED from ../rules/labscale.rules.yml: do not edit. Regenerate with\n"
              "#   python tests/test_monitoring_assets.py --write-prometheusrule\n")
    return header + yaml.safe_dump(obj, sort_keys=False, width=1000, allow_unicode=True)


# --- alert rules -----------------------------------------------------------------------------

def test_rules_pass_promtool_check() -> None:
    out = run_ok([promtool(), "check", "rules", str(RULES)])
    assert f"SUCCESS: {len(ALERTS)} rules found" in out, out


def test_rules_unit_tests_pass() -> None:
    run_ok([promtool(), "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent)


def test_rules_unit_tests_cover_each_alert_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in mine), f"no test where {alert} fires"
        assert any(not c.get("exp_alerts") for c in mine), f"no test where {alert} stays quiet"


def test_rules_have_severity_and_templated_annotations() -> None:
    rules = all_rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        for key in ("summary", "description"):
            assert "$labels." in rule["annotations"][key], f"{rule['alert']} {key} does not use $labels"


def test_rules_use_only_contract_metrics() -> None:
    for rule in all_rules():
        used = set(METRIC_RE.findall(rule["expr"]))
        assert used, f"{rule['alert']} uses no labscale metric"
        assert used <= CONTRACT, f"{rule['alert']} uses metrics outside the contract: {used - CONTRACT}"


# --- Prometheus scrape config ------------------------------------------------------------------

def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # Lay the files out as the two ConfigMaps are mounted: config dir + rules/ beneath it.
    (tmp_path / "rules").mkdir()
    shutil.copy(PROM_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    out = run_ok([promtool(), "check", "config", str(tmp_path / "prometheus.yml")])
    assert "SUCCESS: 1 rule files found" in out, out


def test_prometheus_config_scrapes_pushgateway_with_honor_labels() -> None:
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert config["rule_files"] == [f"rules/{RULES.name}"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "pushgateway")
    assert job["honor_labels"] is True
    assert job["static_configs"][0]["targets"] == ["pushgateway.labscale.svc:9091"]


# --- Kubernetes manifests ----------------------------------------------------------------------

def test_base_renders_and_validates() -> None:
    objs = kustomize(MON)
    assert sorted(o["kind"] for o in objs) == ["ConfigMap"] * 3 + ["Deployment", "Service"], "CRDs belong in operator/"
    k8s_validate(objs)
    assert all(o["metadata"]["namespace"] == "labscale" for o in objs)

    pod = by_kind(objs, "Deployment", "pushgateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "prom/pushgateway:v1.5.1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    (port,) = by_kind(objs, "Service", "pushgateway")["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 9091)


def test_base_configmaps_carry_the_files_unchanged() -> None:
    objs = kustomize(MON)
    assert by_kind(objs, "ConfigMap", "labscale-rules")["data"] == {RULES.name: RULES.read_text()}
    assert by_kind(objs, "ConfigMap", "prometheus-config")["data"] == {"prometheus.yml": PROM_CONFIG.read_text()}
    dash = by_kind(objs, "ConfigMap", "labscale-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dash["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


def test_operator_component_renders_with_servicemonitor_and_same_rules(tmp_path: Path) -> None:
    # An overlay as a prometheus-operator user writes it (kustomize wants relative paths).
    rel = os.path.relpath(MON, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{rel}]\ncomponents: [{rel}/operator]\n")
    objs = kustomize(tmp_path)
    k8s_validate(objs)
    service = by_kind(objs, "Service", "pushgateway")
    monitor = by_kind(objs, "ServiceMonitor", "pushgateway")
    assert all(o["metadata"]["namespace"] == "labscale" for o in objs)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "ServiceMonitor does not select the Service"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}

    rule = by_kind(objs, "PrometheusRule", "labscale")
    assert rule["spec"]["groups"] == rule_groups(), (
        "operator/prometheusrule.yaml is out of date: python tests/test_monitoring_assets.py --write-prometheusrule")


def test_prometheusrule_file_is_the_generated_one() -> None:
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule(), (
        "regenerate: python tests/test_monitoring_assets.py --write-prometheusrule")


# --- Grafana dashboard -------------------------------------------------------------------------

def test_dashboard_shape() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39 and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("study", "task", "model"):
        assert variables[name]["type"] == "query", name
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in d["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_uses_only_contract_metrics() -> None:
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = set(METRIC_RE.findall(expr))
        assert names, f"query uses no labscale metric: {expr}"
        assert names <= CONTRACT, f"metrics outside the contract: {names - CONTRACT} in {expr}"
        used |= names
    # The panels the dashboard promises: scores, cost vs budget, durations, tokens/s, failures, memory.
    assert {"labscale_cell_score", "labscale_study_cost_usd", "labscale_study_budget_usd",
            "labscale_stage_duration_seconds", "labscale_stage_output_tokens_per_second",
            "labscale_stage_success", "labscale_stage_peak_rss_bytes"} <= used


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule, with the Grafana variables filled in.
    exprs = [re.sub(r"\$(study|task|model)\b", ".*", e) for e in dashboard_exprs()]
    exprs = [re.sub(r"label_values\((.*), *\w+\)$", r"\1", e) for e in exprs]  # variable queries
    rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_ok([promtool(), "check", "rules", str(path)])


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-prometheusrule"]:
        sys.exit(__doc__)
    PROMETHEUS_RULE.write_text(render_prometheus_rule())
    print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)}")
