"""Budget alerts (80/90/100% once per period), the missed-reset watchdog, tier spend sums and the
Prometheus metrics, against the pure layer and the fault-injection fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from gateway_operator import budgets, metrics, naming
from gateway_operator import conditions as cond
from gateway_operator.clients.litellm import BackendUnavailable, LiteLLMClient
from gateway_operator.models import TIER_PLURAL, USER_PLURAL, BudgetAlert, GatewayTierStatus, ObjectRef
from gateway_operator.services import sync, tiers
from tests.unit.test_services_users import CODING, NAME, NS, World

P1, P2 = "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"

# --- pure ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spend", "budget", "level"),
    [
        (0, 20, 0),
        (15.99, 20, 0),
        (16, 20, 80),
        (17.99, 20, 80),
        (18, 20, 90),
        (19.999, 20, 90),
        (20, 20, 100),
        (25, 20, 100),
        (0, 0, 100),
        (None, 20, 0),
        (5, None, 0),
    ],
)
def test_budget_level_is_the_highest_threshold_reached(
    spend: float | None, budget: float | None, level: int
) -> None:
    assert budgets.budget_level(spend, budget) == level


def test_each_threshold_is_announced_once_per_period() -> None:
    alert: BudgetAlert | None = None
    announced: list[int | None] = []
    for level, period in [(0, P1), (80, P1), (80, P1), (90, P1), (80, P1), (100, P1), (100, P1)]:
        new = budgets.decide_alert(alert, level, period)
        announced.append(budgets.newly_crossed(alert, new))
        alert = new
    assert announced == [None, 80, None, 90, None, 100, None]
    assert alert == BudgetAlert(level=100, period=P1)
    # The budget reset (new period): below 80% it starts over; crossing 80% again is announced again.
    alert2 = budgets.decide_alert(alert, 0, P2)
    assert alert2 == BudgetAlert(level=0, period=P2) and budgets.newly_crossed(alert, alert2) is None
    alert3 = budgets.decide_alert(alert2, 80, P2)
    assert budgets.newly_crossed(alert2, alert3) == 80
    # Jumping from nothing straight past 100% announces 100 only.
    assert budgets.newly_crossed(None, budgets.decide_alert(None, 100, P1)) == 100


def test_warning_condition_follows_the_current_spend() -> None:
    conditions = budgets.apply_warning((), 90, 18.5, 20, 1)
    warning = cond.get_condition(conditions, budgets.BUDGET_WARNING)
    assert warning is not None and (warning.status, warning.reason) == ("True", "Budget90")
    assert "18.5000 USD" in warning.message
    conditions = budgets.apply_warning(conditions, 0, 0.0, 20, 1)
    warning = cond.get_condition(conditions, budgets.BUDGET_WARNING)
    assert warning is not None and (warning.status, warning.reason) == ("False", "WithinBudget")
    assert budgets.reason_for(100) == cond.BUDGET_EXCEEDED


def test_reset_missed_only_after_the_margin() -> None:
    now = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    due = datetime(2026, 12, 1, 0, 0)  # naive: LiteLLM rows are UTC
    assert not budgets.reset_missed(due, now, margin_seconds=3600)
    assert budgets.reset_missed(due, now, margin_seconds=1800)
    assert not budgets.reset_missed(now + timedelta(days=3), now, margin_seconds=0)
    assert not budgets.reset_missed(None, now, margin_seconds=0)


# --- through the services ------------------------------------------------------------------------------


def _key(world: World) -> dict[str, object]:
    (key,) = world.litellm.live_keys()
    return key


async def _resync(world: World) -> sync.SyncReport:
    by_alias = {naming.key_alias(NS, NAME): world.user()}

    async def reconcile(_: object) -> None:
        raise AssertionError("no drift expected")

    return await sync.resync_tier(world.svc, CODING, by_alias, reconcile)


async def test_resync_posts_one_event_per_threshold_and_period() -> None:
    world = World()
    await world.reconcile()
    world.events.clear()
    for spend in (5.0, 16.5, 17.0, 18.0, 18.2, 20.0, 21.0):
        _key(world)["spend"] = spend
        await _resync(world)
    reasons = [reason for _, reason, _ in world.events]
    assert reasons == ["Budget80", "Budget90", "BudgetExceeded"], world.events
    status = world.status()
    assert status["budgetAlert"]["level"] == 100
    warning = cond.get_condition(world.user().status.conditions, budgets.BUDGET_WARNING)
    ready = cond.get_condition(world.user().status.conditions, cond.READY)
    assert warning is not None and warning.reason == "BudgetExceeded"
    assert ready is not None and ready.reason == cond.BUDGET_EXCEEDED
    # A reconcile (e.g. after a spec edit) re-seeing the exceeded budget does not announce it again.
    world.events.clear()
    world.spec = {**world.spec, "displayName": "Alice"}
    world.generation += 1
    await world.reconcile()
    assert [r for _, r, _ in world.events if r.startswith("Budget")] == []


async def test_watchdog_repairs_a_missed_reset_and_the_next_period_alerts_again() -> None:
    world = World()
    await world.reconcile()
    key = _key(world)
    # LiteLLM's reset job missed the 1st: the reset time is two hours in the past. Within a (here huge)
    # margin the resync only reports the spend of that period.
    past = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    key["spend"], key["budget_reset_at"] = 19.0, past
    world.svc.settings.budget_reset_grace_seconds = 10 * 3600
    await _resync(world)
    assert [r for _, r, _ in world.events][-1] == "Budget90"
    assert world.status()["budgetAlert"]["level"] == 90
    world.svc.settings.budget_reset_grace_seconds = 1800
    world.events.clear()
    world.reset_counts()
    report = await _resync(world)
    assert report.resets_repaired == [f"{NS}/{NAME}"]
    assert world.litellm.writes == ["/key/update", "/key/update"]
    key = _key(world)
    assert key["spend"] == 0 and key["budget_duration"] == "1mo"
    assert datetime.fromisoformat(str(key["budget_reset_at"])) > datetime.now(UTC)
    assert [r for _, r, _ in world.events] == [budgets.BUDGET_RESET_MISSED]
    assert "set to 0" in world.events[0][2] and "sk-" not in world.events[0][2]
    status = world.status()
    assert status["spendUSD"] == 0 and status["budgetResetAt"] == key["budget_reset_at"]
    assert status["budgetAlert"] == {"level": 0, "period": key["budget_reset_at"]}
    # Repaired: the next resync leaves it alone; 80% in the new period is announced again.
    world.reset_counts()
    key["spend"] = 16.0
    await _resync(world)
    assert world.litellm.writes == []
    assert [r for _, r, _ in world.events] == [budgets.BUDGET_RESET_MISSED, "Budget80"]


async def test_a_reset_within_the_margin_is_left_to_litellm() -> None:
    world = World()
    await world.reconcile()
    _key(world)["budget_reset_at"] = (datetime.now(UTC) - timedelta(minutes=9)).isoformat()
    world.reset_counts()
    report = await _resync(world)
    assert report.resets_repaired == [] and world.litellm.writes == []


async def test_tier_spend_sums_and_is_written_only_when_it_changes() -> None:
    world = World()
    await world.reconcile()
    _key(world)["spend"] = 3.25
    report = await _resync(world)
    assert (report.spend_usd, report.budget_usd) == (3.25, 20.0)
    world.kube.statuses[(TIER_PLURAL, None, "coding")] = {"teamId": "llmgw-tier-coding"}
    current = GatewayTierStatus(teamId="llmgw-tier-coding")
    ref = ObjectRef(name="coding")
    assert await tiers.update_spend(world.svc, ref, current, 3.25, 20.0, 10.0)
    assert world.kube.statuses[(TIER_PLURAL, None, "coding")] == {
        "teamId": "llmgw-tier-coding",
        "spendUSD": 3.25,
        "budgetUSD": 20.0,
        "gatewaySpendUSD": 10.0,
    }
    recorded = GatewayTierStatus.model_validate(world.kube.statuses[(TIER_PLURAL, None, "coding")])
    assert not await tiers.update_spend(world.svc, ref, recorded, 3.25, 20.0, 10.0)
    # A tier reconcile keeps the sums (it rebuilds the rest of the status).
    rebuilt = tiers.tier_status(recorded, 1, 1, "True", cond.PROVISIONED, "ok", recorded.team_id)
    assert rebuilt.spend_usd == 3.25 and rebuilt.gateway_spend_usd == 10.0
    assert (USER_PLURAL, NS, NAME) in world.kube.statuses


# --- metrics -------------------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_admin_calls_and_errors_are_counted_by_endpoint() -> None:
    world = World()
    before = _sample("llmgw_litellm_requests_total", method="POST", endpoint="/team/new")
    await world.client.team_new({"team_id": "t1"})
    assert _sample("llmgw_litellm_requests_total", method="POST", endpoint="/team/new") == before + 1
    errors = _sample("llmgw_litellm_errors_total", method="GET", endpoint="/team/info", error="503")
    world.litellm.fail_with = [503]
    with pytest.raises(BackendUnavailable):
        await world.client.team_info("t1")
    assert (
        _sample("llmgw_litellm_errors_total", method="GET", endpoint="/team/info", error="503") == errors + 1
    )

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    down = LiteLLMClient(
        "http://x", SecretStr("sk-m"), transport=httpx.MockTransport(refuse), retries=1, backoff=0
    )
    labels = {"method": "GET", "endpoint": "/user/info", "error": "ConnectError"}
    refused = _sample("llmgw_litellm_errors_total", **labels)
    with pytest.raises(BackendUnavailable):
        await down.user_info("u")
    assert _sample("llmgw_litellm_errors_total", **labels) == refused + 2  # each attempt


async def test_budget_metrics_follow_the_events() -> None:
    world = World()
    await world.reconcile()
    crossed = _sample("llmgw_budget_alerts_total", threshold="80")
    repaired = _sample("llmgw_budget_resets_repaired_total")
    _key(world)["spend"] = 17.0
    await _resync(world)
    assert _sample("llmgw_budget_alerts_total", threshold="80") == crossed + 1
    _key(world)["budget_reset_at"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await _resync(world)
    assert _sample("llmgw_budget_resets_repaired_total") == repaired + 1


def test_users_gauge_counts_the_last_seen_state_of_each_user() -> None:
    def users(**labels: str) -> float | None:
        return REGISTRY.get_sample_value("llmgw_users", {"tier": "t-gauge", **labels})

    metrics.track_user(("ns", "a"), "t-gauge", "True", "Provisioned")
    metrics.track_user(("ns", "b"), "t-gauge", "True", "Provisioned")
    metrics.track_user(("ns", "c"), "t-gauge", "False", "Suspended")
    assert users(ready="True", reason="Provisioned") == 2
    assert users(ready="False", reason="Suspended") == 1
    metrics.track_user(("ns", "c"), "t-gauge", "True", "Provisioned")  # unsuspended
    metrics.track_user(("ns", "a"), None, "", "")  # deleted
    assert users(ready="True", reason="Provisioned") == 2
    assert users(ready="False", reason="Suspended") is None
    for name in ("b", "c"):
        metrics.track_user(("ns", name), None, "", "")
    metrics.TIER_SPEND.labels(tier="t-gauge").set(4.5)
    metrics.forget_tier("t-gauge")
    assert users(ready="True", reason="Provisioned") is None
    assert REGISTRY.get_sample_value("llmgw_tier_spend_usd", {"tier": "t-gauge"}) is None


def test_reconcile_duration_is_observed_with_its_outcome() -> None:
    ok = _sample("llmgw_reconcile_duration_seconds_count", kind="Test", outcome="ok")
    failed = _sample("llmgw_reconcile_duration_seconds_count", kind="Test", outcome="error")
    with metrics.timed("Test"):
        pass
    with pytest.raises(RuntimeError), metrics.timed("Test"):
        raise RuntimeError("boom")
    assert _sample("llmgw_reconcile_duration_seconds_count", kind="Test", outcome="ok") == ok + 1
    assert _sample("llmgw_reconcile_duration_seconds_count", kind="Test", outcome="error") == failed + 1


async def test_a_repaired_reset_starts_a_new_period_even_if_litellm_reports_the_same_reset_time() -> None:
    world = World()
    await world.reconcile()
    key = _key(world)
    key["spend"] = 18.5
    await _resync(world)
    period = world.status()["budgetAlert"]["period"]
    assert world.status()["budgetAlert"]["level"] == 90
    key["budget_reset_at"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    await _resync(world)  # repaired; the fake recomputes the same 1st of next month
    assert world.status()["budgetAlert"] == {"level": 0, "period": period}
    world.events.clear()
    key["spend"] = 16.5
    await _resync(world)
    assert [r for _, r, _ in world.events] == ["Budget80"]
