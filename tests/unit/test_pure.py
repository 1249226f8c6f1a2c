"""Pure layer: naming, desired state and diffs, conditions."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway_operator import conditions as cond
from gateway_operator import desired as want
from gateway_operator import naming
from gateway_operator.models import (
    Condition,
    GatewayTierSpec,
    GatewayUserSpec,
    KeyRecord,
    ObjectRef,
    TeamRecord,
)

TIER = GatewayTierSpec(
    monthlyBudgetUSD=20, rpmLimit=50, tpmLimit=100_000, models=("model-balanced", "model-embed")
)
REF = ObjectRef(name="bob", namespace="team-a", uid="u-1", generation=3)


def user(**fields: object) -> GatewayUserSpec:
    return GatewayUserSpec.model_validate({"email": "Bob@Company.com", "tier": "coding", **fields})


def test_names_are_deterministic_and_unambiguous() -> None:
    assert naming.team_id("coding") == "llmgw-tier-coding"
    assert naming.tier_from_team_id("llmgw-tier-coding") == "coding"
    assert naming.key_alias("a-b", "c") != naming.key_alias("a", "b-c")
    assert naming.parse_key_alias(naming.key_alias("ns", "name.with.dots")) == ("ns", "name.with.dots")
    assert naming.parse_key_alias(naming.retired_alias(naming.key_alias("ns", "x"))) is None
    assert naming.parse_key_alias("someone-elses-key") is None
    assert naming.user_id(" Bob@Company.COM ") == "bob@company.com"
    assert naming.secret_name("bob") == "bob-llm-key"
    assert naming.secret_name("bob", "custom") == "custom"
    long = naming.secret_name("x" * 250)
    assert len(long) <= 253 and long.endswith("-llm-key") and long != naming.secret_name("x" * 249 + "y")
    assert naming.key_id("abcdef0123456789" * 4) == "abcdef012345"
    assert naming.hash_key("sk-1") == naming.hash_key("sk-1") != naming.hash_key("sk-2")


def test_desired_key_carries_the_enforced_limits() -> None:
    key = want.desired_key(REF, user(), TIER)
    assert key.key_alias == "llmgw.team-a.bob" and key.team_id == "llmgw-tier-coding"
    assert key.user_id == "bob@company.com"
    assert (key.max_budget, key.budget_duration, key.rpm_limit, key.tpm_limit) == (20, "1mo", 50, 100_000)
    assert key.allowed_routes == ("llm_api_routes", "/key/info", "/user/info")
    assert key.blocked is False
    assert key.metadata == {
        "managed-by": "llm-gateway-operator",
        "namespace": "team-a",
        "name": "bob",
        "uid": "u-1",
        "tier": "coding",
    }
    body = key.generate_body("sk-value", spend=1.5)
    assert body["key"] == "sk-value" and body["spend"] == 1.5 and body["key_alias"] == key.key_alias


def test_overrides_and_suspension() -> None:
    key = want.desired_key(REF, user(monthlyBudgetUSD=5.5, rpmLimit=3, suspended=True), TIER)
    assert (key.max_budget, key.rpm_limit, key.blocked) == (5.5, 3, True)
    row = want.desired_user(user(displayName="Bob Jones", monthlyBudgetUSD=5.5), TIER, "coding")
    assert row.max_budget == 5.5 and row.user_alias == "Bob Jones"
    assert row.create_body()["auto_create_key"] is False


def test_team_has_models_but_no_aggregate_caps() -> None:
    team = want.desired_team("coding", TIER)
    body = team.create_body()
    assert body["team_id"] == "llmgw-tier-coding" and body["models"] == ["model-balanced", "model-embed"]
    assert "max_budget" not in body and "rpm_limit" not in body
    actual = TeamRecord(
        team_id="llmgw-tier-coding",
        team_alias="coding",
        models=("model-embed", "model-balanced"),
        metadata={"managed-by": "llm-gateway-operator", "tier": "coding", "ui": "x"},
    )
    assert want.team_changes(team, actual) == {}
    capped = actual.model_copy(update={"max_budget": 100.0})
    assert want.team_changes(team, capped) == {"max_budget": None}


def test_key_changes_is_empty_when_matching_and_minimal_otherwise() -> None:
    desired = want.desired_key(REF, user(), TIER)
    actual = KeyRecord.model_validate(
        {**desired.update_fields(), "token": "t", "spend": 4.0, "metadata": {**desired.metadata, "extra": 1}}
    )
    assert want.key_changes(desired, actual) == {}
    drifted = actual.model_copy(update={"max_budget": 99.0, "models": ("x",)})
    assert set(want.key_changes(desired, drifted)) == {"max_budget", "models"}
    lost_meta = actual.model_copy(update={"metadata": {"extra": 1}})
    assert want.key_changes(desired, lost_meta)["metadata"] == {**desired.metadata, "extra": 1}


def test_next_budget_reset_is_the_first_of_next_month_utc() -> None:
    assert want.next_budget_reset(datetime(2026, 11, 17, 10, 30, tzinfo=UTC)) == datetime(
        2026, 12, 1, tzinfo=UTC
    )
    assert want.next_budget_reset(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = cond.set_condition((), "Ready", "False", "TierNotFound", "m", 1, now="2026-01-01T00:00:00Z")
    same = cond.set_condition(
        first, "Ready", "False", "BackendUnavailable", "m2", 2, now="2026-01-02T00:00:00Z"
    )
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z" and same[0].reason == "BackendUnavailable"
    flipped = cond.set_condition(same, "Ready", "True", "Provisioned", "ok", 2, now="2026-01-03T00:00:00Z")
    assert flipped[0].last_transition_time == "2026-01-03T00:00:00Z"
    other = cond.set_condition(flipped, "Other", "True", "R", "", 2)
    assert [c.type for c in other] == ["Ready", "Other"]
    assert cond.is_true(other) and not cond.is_true((Condition(type="Ready", status="False"),))


def test_user_ready_reasons() -> None:
    assert cond.user_ready(suspended=True, spend=0, max_budget=1, secret_name="s")[1] == "Suspended"
    assert cond.user_ready(suspended=False, spend=2, max_budget=2, secret_name="s")[:2] == (
        "False",
        "BudgetExceeded",
    )
    assert cond.user_ready(suspended=False, spend=1, max_budget=2, secret_name="s")[:2] == (
        "True",
        "Provisioned",
    )
