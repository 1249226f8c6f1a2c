"""Prometheus metrics of the operator (served on METRICS_PORT by ``serve``).

Label values are bounded: kinds, endpoint paths, tier names, condition reasons. Never a key, an email
or a user name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_SECONDS = Histogram(
    "llmgw_reconcile_duration_seconds",
    "Duration of one reconcile, by kind (GatewayUser, GatewayTier, Resync) and outcome",
    ["kind", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LITELLM_REQUESTS = Counter(
    "llmgw_litellm_requests_total", "LiteLLM admin API requests sent (each attempt)", ["method", "endpoint"]
)
LITELLM_ERRORS = Counter(
    "llmgw_litellm_errors_total",
    "LiteLLM admin API failures (each attempt), by error class (HTTP status or transport)",
    ["method", "endpoint", "error"],
)
TIER_SPEND = Gauge("llmgw_tier_spend_usd", "Spend of the tier's users in the current budget period", ["tier"])
TIER_BUDGET = Gauge("llmgw_tier_budget_usd", "Sum of the monthly budgets of the tier's users", ["tier"])
BUDGET_ALERTS = Counter(
    "llmgw_budget_alerts_total",
    "Budget thresholds crossed (one per user, threshold and period)",
    ["threshold"],
)
BUDGET_RESETS_REPAIRED = Counter(
    "llmgw_budget_resets_repaired_total", "Keys whose missed LiteLLM budget reset the watchdog repaired"
)

# (namespace, name) -> (tier, Ready status, Ready reason), fed by the GatewayUser index on every event,
# so the gauge is exact at scrape time without any API call.
_users: dict[tuple[str, str], tuple[str, str, str]] = {}


class _UsersCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "llmgw_users",
            "GatewayUsers by tier and Ready condition (status and reason)",
            labels=["tier", "ready", "reason"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for labels in list(_users.values()):
            counts[labels] = counts.get(labels, 0) + 1
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        yield family


REGISTRY.register(_UsersCollector())


def track_user(key: tuple[str, str], tier: str | None, ready: str, reason: str) -> None:
    """Record a GatewayUser as last seen (tier None or a deleting object forgets it)."""
    if tier is None:
        _users.pop(key, None)
    else:
        _users[key] = (tier, ready, reason)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        RECONCILE_SECONDS.labels(kind=kind, outcome=outcome).observe(time.perf_counter() - started)


ORPHAN_KEYS = Gauge(
    "llmgw_orphan_keys",
    "Keys of ours that no GatewayUser accounts for (or retired keys past their deadline) in the last "
    "resync of the tier, by what the garbage collection did: revoked, dry-run (reported only), failed",
    ["tier", "action"],
)
ORPHAN_ACTIONS = ("revoked", "dry-run", "failed")


def forget_tier(tier: str) -> None:
    for gauge in (TIER_SPEND, TIER_BUDGET):
        with suppress(KeyError):
            gauge.remove(tier)
    for action in ORPHAN_ACTIONS:
        with suppress(KeyError):
            ORPHAN_KEYS.remove(tier, action)


def serve(port: int, host: str) -> None:
    """The /metrics endpoint in a background thread (0 disables it)."""
    if port:
        start_http_server(port, addr=host)
