"""deploy/prometheus/keysafe-alerts.yaml: well-formed Prometheus rules whose every
keysafe metric, and every label value they match on, is one /metrics exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from keysafe.server.app import KeysafeApp

from .serverkit import bearer, build_app, make_token

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "keysafe-alerts.yaml"


@pytest.fixture
def app(home: Path) -> KeysafeApp:
    # The scheduled access report on (its gauge is exported only then).
    return build_app(home, access_report_interval=86400.0)


def test_every_rule_names_a_metric_the_server_exports(client: TestClient,
                                                      app: KeysafeApp) -> None:
    # Traffic of the statuses the rules look for: 200, 401, 403 (a viewer writing).
    token = make_token(app, "alerts", ["viewer"], ["acme"])
    client.get("/api/orgs/acme/secrets", headers=bearer(token))
    client.get("/api/orgs/acme/secrets", headers=bearer("ks_nope_nope"))
    client.put("/api/secrets/acme/x", json={"secret_value": "v"}, headers=bearer(token))
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    samples = {s.name: s for f in families for s in f.samples}
    outcomes = {s.labels.get("outcome") for f in families for s in f.samples
                if s.name == "keysafe_key_checks_total"}

    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {g["name"] for g in doc["groups"]} == {"keysafe"}
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        for metric in re.findall(r"\bkeysafe_[a-z_]+", expr):
            assert metric in samples, (rule["alert"], metric)
        # Any other metric is Prometheus' own `up`, or kube-state-metrics' (the access
        # report CronJob's Jobs).
        others = {m for m in re.findall(r"\b([a-z_]+)\{", expr) if not m.startswith("keysafe_")}
        assert others <= {"up", "kube_job_failed"}, (rule["alert"], others)
        for value in re.findall(r'outcome="([a-z_]+)"', expr):
            assert value in outcomes, (rule["alert"], value)
    statuses = {s.labels["status"] for f in families for s in f.samples
                if s.name == "keysafe_http_requests_total"}
    assert {"200", "401", "403"} <= statuses  # the label the rules match on
