"""Resync cost and effects, and the tier service, against the fault-injection fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway_operator import naming
from gateway_operator.models import (
    TIER_PLURAL,
    USER_PLURAL,
    GatewayTierSpec,
    GatewayTierStatus,
    GatewayUserSpec,
    GatewayUserStatus,
    ObjectRef,
    TierView,
    UserView,
)
from gateway_operator.services import sync, tiers, users
from tests.unit.test_services_users import CODING, World


def view(world: World, i: int) -> UserView:
    status = world.kube.statuses.get((USER_PLURAL, "demo", f"u{i}"), {})
    return UserView(
        ref=ObjectRef(name=f"u{i}", namespace="demo", uid=f"uid-{i}", generation=1),
        spec=GatewayUserSpec(email=f"u{i}@company.com", tier="coding"),
        status=GatewayUserStatus.model_validate(status),
    )


async def populate(world: World, count: int) -> dict[str, UserView]:
    for i in range(count):
        await users.reconcile_user(world.svc, view(world, i), CODING)
    return {naming.key_alias("demo", f"u{i}"): view(world, i) for i in range(count)}


async def test_resync_cost_is_one_team_info_call_not_calls_per_user() -> None:
    world = World()
    world.litellm.teams["llmgw-tier-coding"] = {"team_id": "llmgw-tier-coding", "models": []}
    by_alias = await populate(world, 250)
    for key in world.litellm.keys.values():
        key["spend"] = 0.5
    world.reset_counts()
    reconciled: list[str] = []

    async def reconcile(user: UserView) -> None:
        reconciled.append(user.ref.name)

    report = await sync.resync_tier(world.svc, CODING, by_alias, reconcile)
    assert world.litellm.reads == ["/team/info"] and world.litellm.writes == []
    assert (report.pages, report.keys, report.synced, reconciled) == (1, 250, 250, [])
    assert world.kube.statuses[(USER_PLURAL, "demo", "u7")]["spendUSD"] == 0.5
    # Nothing changed since: the next resync writes nothing at all.
    world.reset_counts()
    by_alias = {naming.key_alias("demo", f"u{i}"): view(world, i) for i in range(250)}
    report = await sync.resync_tier(world.svc, CODING, by_alias, reconcile)
    assert world.kube.writes == [] and world.litellm.writes == [] and report.status_writes == 0


async def test_resync_repairs_drift_and_deletes_orphans_after_the_grace_period() -> None:
    world = World()
    by_alias = await populate(world, 3)
    keys = {k["key_alias"]: k for k in world.litellm.keys.values()}
    keys["llmgw.demo.u0"]["max_budget"] = 999  # changed in the UI
    del world.litellm.keys[keys["llmgw.demo.u1"]["token"]]  # deleted in the UI
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    world.litellm._store_key(
        "sk-orphan-000000000000000000000000000000000000000000",
        {
            "key_alias": "llmgw.demo.gone",
            "team_id": "llmgw-tier-coding",
            "created_at": old,
            "metadata": {"managed-by": "llm-gateway-operator"},
        },
    )
    world.litellm._store_key(
        "sk-fresh-0000000000000000000000000000000000000000000",
        {"key_alias": "llmgw.demo.just-created", "team_id": "llmgw-tier-coding"},
    )
    world.litellm._store_key(
        "sk-other-0000000000000000000000000000000000000000000",
        {"key_alias": "someone-elses", "team_id": "llmgw-tier-coding", "created_at": old},
    )
    repaired: list[str] = []

    async def reconcile(user: UserView) -> None:
        repaired.append(user.ref.name)
        await users.reconcile_user(world.svc, view(world, int(user.ref.name[1:])), CODING)

    report = await sync.resync_tier(world.svc, CODING, by_alias, reconcile)
    assert sorted(repaired) == ["u0", "u1"]
    assert report.orphans_deleted == ["llmgw.demo.gone"]
    aliases = sorted(str(k.get("key_alias")) for k in world.litellm.keys.values())
    assert aliases == [
        "llmgw.demo.just-created",
        "llmgw.demo.u0",
        "llmgw.demo.u1",
        "llmgw.demo.u2",
        "someone-elses",
    ]
    assert {k["key_alias"]: k for k in world.litellm.keys.values()}["llmgw.demo.u0"]["max_budget"] == 20


async def test_tier_team_create_is_one_call_and_rerun_makes_no_writes() -> None:
    world = World()
    ref = ObjectRef(name="coding", generation=1)
    world.kube.objects[(TIER_PLURAL, None, "coding")] = {}
    status = await tiers.reconcile_tier(world.svc, ref, CODING.spec, GatewayTierStatus(), users=2)
    assert world.litellm.writes == ["/team/new"] and world.litellm.reads == []
    team = world.litellm.teams["llmgw-tier-coding"]
    assert team["models"] == ["model-balanced", "model-embed"] and "max_budget" not in team
    assert status.team_id == "llmgw-tier-coding" and status.users == 2
    world.reset_counts()
    await tiers.reconcile_tier(world.svc, ref, CODING.spec, status, users=2)
    assert world.litellm.writes == [] and world.kube.writes == []
    edited = GatewayTierSpec(monthlyBudgetUSD=30, rpmLimit=5, models=("model-cheap",))
    await tiers.reconcile_tier(world.svc, ref.model_copy(update={"generation": 2}), edited, status, users=2)
    assert world.litellm.writes == ["/team/update"] and team["models"] == ["model-cheap"]


async def test_tier_delete_is_refused_while_users_reference_it() -> None:
    world = World()
    ref = ObjectRef(name="coding", generation=1)
    status = await tiers.reconcile_tier(world.svc, ref, CODING.spec, GatewayTierStatus(), users=1)
    with pytest.raises(tiers.TierInUse) as caught:
        await tiers.delete_tier(world.svc, ref, status, ["demo/alice"])
    assert "demo/alice" in str(caught.value)
    written: dict[str, Any] = world.kube.statuses[(TIER_PLURAL, None, "coding")]
    ready = written["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InUse") and "demo/alice" in ready["message"]
    assert "llmgw-tier-coding" in world.litellm.teams
    await tiers.delete_tier(world.svc, ref, status, [])
    assert world.litellm.teams == {}
    await tiers.delete_tier(world.svc, ref, status, [])  # already gone: fine


async def test_tier_not_ready_blocks_users_without_calls() -> None:
    world = World()
    pending = TierView(name="coding", spec=CODING.spec, team_ready=False)
    await users.reconcile_user(world.svc, view(world, 0), pending)
    assert world.litellm.reads == [] and world.litellm.writes == []
    assert world.kube.statuses[(USER_PLURAL, "demo", "u0")]["conditions"][0]["reason"] == "TierNotReady"


async def test_resync_looks_at_the_user_as_known_now_before_reconciling_it() -> None:
    """A pass works from a snapshot taken before its (slow) listing: a user that was still waiting for its
    key then and is Ready now is synced, not reconciled again; one gone since is left alone."""
    world = World()
    current = await populate(world, 3)
    waiting = GatewayUserStatus.model_validate({"observedGeneration": 1})  # snapshot: no key yet
    snapshot = {alias: u.model_copy(update={"status": waiting}) for alias, u in current.items()}
    reconciled: list[str] = []

    async def reconcile(user: UserView) -> None:
        reconciled.append(user.ref.name)

    gone = naming.key_alias("demo", "u2")

    def latest(user: UserView) -> UserView | None:
        alias = naming.key_alias(user.ref.namespace or "", user.ref.name)
        return None if alias == gone else current[alias]

    world.reset_counts()
    report = await sync.resync_tier(world.svc, CODING, snapshot, reconcile, latest)
    assert reconciled == [] and report.repaired == []
    assert report.synced == 2 and world.litellm.writes == []
    # Without the look (the snapshot alone), all three would have been reconciled again.
    await sync.resync_tier(world.svc, CODING, snapshot, reconcile)
    assert sorted(reconciled) == ["u0", "u1", "u2"]
