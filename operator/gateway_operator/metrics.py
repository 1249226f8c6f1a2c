"""Prometheus metrics of the operator (served on METRICS_PORT by ``serve``).

Label values are bounded: kinds, endpoint paths, tier names, condition reasons. Never a key, an email
or a user name.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
USERS = Gauge(
    "llmgw_users", "GatewayUsers by tier and Ready condition (status and reason)", ["tier", "ready", "reason"]
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

_user_labels: dict[str, set[tuple[str, str]]] = {}


@contextmanager
def timed(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        RECONCILE_SECONDS.labels(kind=kind, outcome=outcome).observe(time.perf_counter() - started)


def set_tier_users(tier: str, ready: Iterable[tuple[str, str]]) -> None:
    """Replace the tier's user counts with those of ``ready`` ((status, reason) per user)."""
    counts: dict[tuple[str, str], int] = {}
    for item in ready:
        counts[item] = counts.get(item, 0) + 1
    for stale in _user_labels.get(tier, set()) - set(counts):
        USERS.remove(tier, *stale)
    for (status, reason), count in counts.items():
        USERS.labels(tier=tier, ready=status, reason=reason).set(count)
    _user_labels[tier] = set(counts)


def forget_tier(tier: str) -> None:
    set_tier_users(tier, ())
    for gauge in (TIER_SPEND, TIER_BUDGET):
        with suppress(KeyError):
            gauge.remove(tier)


def serve(port: int, host: str) -> None:
    """The /metrics endpoint in a background thread (0 disables it)."""
    if port:
        start_http_server(port, addr=host)
