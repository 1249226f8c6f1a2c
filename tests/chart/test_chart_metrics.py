"""Chart wiring of the operator's metrics: port and env, the Service, the optional ServiceMonitor and
Grafana dashboard ConfigMap, and the schema's guard rails."""

from __future__ import annotations

import json
import re

from tests.chart.helm import CHART, VALUE_SETS, env_of, render, template_error

DEFAULT = VALUE_SETS["default"]
METRIC_NAMES = {
    "llmgw_reconcile_duration_seconds",
    "llmgw_litellm_requests_total",
    "llmgw_litellm_errors_total",
    "llmgw_users",
    "llmgw_tier_spend_usd",
    "llmgw_tier_budget_usd",
    "llmgw_budget_alerts_total",
    "llmgw_budget_resets_repaired_total",
    "llmgw_orphan_keys",
}


def test_metrics_port_and_service_by_default_without_a_servicemonitor() -> None:
    r = render(DEFAULT)
    assert r.of_kind("ServiceMonitor") == []
    deployment = r.one("Deployment", "-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["METRICS_PORT"]["value"] == "9090"
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    service = r.one("Service", "-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_servicemonitor_scrapes_the_metrics_service_when_enabled() -> None:
    r = render(
        DEFAULT,
        {
            "operator.metrics.serviceMonitor.enabled": "true",
            "operator.metrics.serviceMonitor.labels.release": "kube-prometheus-stack",
            "operator.metrics.port": "9400",
        },
    )
    monitor = r.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["llm-gateway"]}
    service = r.one("Service", "-operator-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # The selector must pick exactly the metrics Service, not LiteLLM's.
    matching = [
        s["metadata"]["name"]
        for s in r.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert matching == [service["metadata"]["name"]]
    assert service["spec"]["ports"][0]["port"] == 9400


def test_metrics_can_be_turned_off_entirely() -> None:
    r = render(
        DEFAULT, {"operator.metrics.enabled": "false", "operator.metrics.serviceMonitor.enabled": "true"}
    )
    assert r.of_kind("ServiceMonitor") == []
    assert not [s for s in r.of_kind("Service") if s["metadata"]["name"].endswith("-operator-metrics")]
    container = r.one("Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "METRICS_PORT" not in env_of(container)


def test_dashboard_configmap_ships_the_dashboard_json_and_queries_only_our_metrics() -> None:
    shipped = json.loads((CHART / "dashboards" / "llm-gateway.json").read_text())
    r = render(DEFAULT, {"operator.metrics.dashboard.enabled": "true"})
    cm = r.one("ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["llm-gateway.json"]) == shipped
    exprs = [t["expr"] for p in shipped["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"llmgw_[a-z_]+", e)}
    base = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert base <= METRIC_NAMES, base - METRIC_NAMES
    assert base == METRIC_NAMES - {"llmgw_budget_resets_repaired_total"} | {
        "llmgw_budget_resets_repaired_total"
    }
    assert render(DEFAULT).of_kind("ConfigMap") == [c for c in render(DEFAULT).of_kind("ConfigMap")]
    assert not [
        c for c in render(DEFAULT).of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]


def test_schema_rejects_a_metrics_port_clashing_with_health_and_unknown_keys() -> None:
    assert "metrics" in template_error(DEFAULT, {"operator.metrics.port": "8080"})
    assert "serviceMonitor" in template_error(DEFAULT, {"operator.metrics.serviceMonitor.intervall": "1m"})


def test_operator_metric_names_are_the_ones_the_chart_documents() -> None:
    from prometheus_client import REGISTRY

    import gateway_operator.metrics  # noqa: F401  (registers them)

    registered = {family.name for family in REGISTRY.collect() if family.name.startswith("llmgw_")}
    assert {re.sub(r"_total$", "", n) for n in METRIC_NAMES} == registered
