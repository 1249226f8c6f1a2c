"""Key garbage collection: which keys are candidates (pure), and the resync's pass in each GC_MODE with its
report (Event on the tier, log line, llmgw_orphan_keys), against the fault-injection fakes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway_operator import adoption
from gateway_operator.adoption import GcReason
from gateway_operator.models import TIER_PLURAL, KeyRecord
from gateway_operator.services import sync
from tests.unit.test_services_sync_tiers import populate
from tests.unit.test_services_users import CODING, World

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OURS = {"managed-by": "llm-gateway-operator", "uid": "uid-x"}
LIVE = frozenset({"llmgw.demo.alice"})
GRACE = 120.0


def key(alias: str, metadata: dict[str, Any] | None = OURS, age: float = 3600, **fields: Any) -> KeyRecord:
    return KeyRecord.model_validate(
        {
            "token": "ab" * 32,
            "key_alias": alias,
            "team_id": "llmgw-tier-coding",
            "metadata": metadata,
            "spend": 0.25,
            "created_at": (NOW - timedelta(seconds=age)).isoformat(),
            **fields,
        }
    )


def candidate(k: KeyRecord, live: frozenset[str] = LIVE) -> adoption.GcCandidate | None:
    return adoption.gc_candidate(k, live, NOW, GRACE)


# --- which keys (pure) ----------------------------------------------------------------------------------


def test_a_key_of_ours_whose_user_is_gone_is_due_after_the_grace() -> None:
    found = candidate(key("llmgw.demo.bob"))
    assert found is not None and found.due and found.reason is GcReason.ORPHAN
    assert found.row() == {
        "alias": "llmgw.demo.bob",
        "keyId": "ab" * 6,
        "team": "llmgw-tier-coding",
        "spendUSD": 0.25,
        "ageSeconds": 3600,
        "reason": "orphan",
        "keepUntil": None,
    }
    assert "ab" * 32 not in str(found.row())
    young = candidate(key("llmgw.demo.bob", age=30))
    assert young is not None and not young.due


@pytest.mark.parametrize(
    "k",
    [
        key("llmgw.demo.alice"),  # its GatewayUser lives
        key("llmgw.demo.bob", metadata=None),  # not ours: made by hand or by the old script
        key("llmgw.demo.bob", metadata={"managed-by": "someone-else"}),
        key("team-x-bob"),  # not our alias
        key("llmgw.demo.alice:retired"),  # one-off retired key of a live user: its reconcile's
        key("llmgw.demo.bob:retired", metadata=None),  # retired, but not ours
    ],
)
def test_never_candidates(k: KeyRecord) -> None:
    assert candidate(k) is None


def test_retired_keys_wait_for_their_deadline_even_past_the_orphan_grace() -> None:
    later = (NOW + timedelta(hours=5)).isoformat().replace("+00:00", "Z")
    for alias in ("llmgw.demo.alice:retired-abcdef012345", "llmgw.demo.gone:retired-abcdef012345"):
        waiting = candidate(key(alias, metadata={**OURS, adoption.RETIRE_AFTER: later}, age=86400))
        assert waiting is not None and not waiting.due and waiting.reason is GcReason.RETIRED
        assert waiting.keep_until == NOW + timedelta(hours=5, seconds=GRACE)


def test_stale_retired_keys_are_due_after_deadline_plus_grace_even_with_a_live_user() -> None:
    passed = (NOW - timedelta(seconds=GRACE + 1)).isoformat()
    stale = candidate(key("llmgw.demo.alice:retired-abc", metadata={**OURS, adoption.RETIRE_AFTER: passed}))
    assert stale is not None and stale.due and stale.reason is GcReason.RETIRED
    just = (NOW - timedelta(seconds=GRACE - 5)).isoformat()
    racing = candidate(key("llmgw.demo.alice:retired-abc", metadata={**OURS, adoption.RETIRE_AFTER: just}))
    assert racing is not None and not racing.due, "the rotation gets the grace to revoke it itself"


def test_a_retired_key_without_deadline_of_a_gone_user_is_an_orphan() -> None:
    found = candidate(key("llmgw.demo.gone:retired"))
    assert found is not None and found.due and found.reason is GcReason.ORPHAN


def test_unparseable_deadline_counts_as_none() -> None:
    meta = {**OURS, adoption.RETIRE_AFTER: "soon"}
    assert candidate(key("llmgw.demo.alice:retired-x", metadata=meta)) is None
    found = candidate(key("llmgw.demo.gone:retired-x", metadata=meta))
    assert found is not None and found.reason is GcReason.ORPHAN


def test_event_message_fits_and_counts_the_rest() -> None:
    many = [candidate(key(f"llmgw.demo.user-{i:03d}")) for i in range(40)]
    found = [c for c in many if c is not None]
    message = sync.gc_message("revoked", found)
    assert len(message) <= sync.EVENT_LIMIT and message.startswith("revoked 40 key(s)")
    assert message.endswith("more") and "llmgw.demo.user-000 (key abababababab" in message
    assert "spend 0.2500 USD, age 60m, orphan" in message


# --- the resync's pass ------------------------------------------------------------------------------------


def _gauge(tier: str, action: str) -> float:
    return REGISTRY.get_sample_value("llmgw_orphan_keys", {"tier": tier, "action": action}) or 0.0


def seed(world: World) -> dict[str, str]:
    """Three users of ours, one orphan of ours, a foreign key under our prefix, a retired key in grace."""
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    world.kube.objects[(TIER_PLURAL, None, "coding")] = {"metadata": {"name": "coding", "uid": "tier-uid"}}
    rows = {
        "orphan": world.litellm._store_key(
            "sk-orphan-00000000000000000000000000000000000000000",
            {
                "key_alias": "llmgw.demo.gone",
                "team_id": "llmgw-tier-coding",
                "created_at": old,
                "spend": 1.5,
                "metadata": {"managed-by": "llm-gateway-operator", "uid": "gone-uid"},
            },
        ),
        "foreign": world.litellm._store_key(
            "sk-foreign-0000000000000000000000000000000000000000",
            {"key_alias": "llmgw.demo.legacy", "team_id": "llmgw-tier-coding", "created_at": old},
        ),
        "retired": world.litellm._store_key(
            "sk-retired-0000000000000000000000000000000000000000",
            {
                "key_alias": "llmgw.demo.u0:retired-0123456789ab",
                "team_id": "llmgw-tier-coding",
                "created_at": old,
                "metadata": {"managed-by": "llm-gateway-operator", adoption.RETIRE_AFTER: future},
            },
        ),
    }
    return {name: row["token"] for name, row in rows.items()}


async def seeded_world(
    users: int, gc_mode: str | None = None
) -> tuple[World, dict[str, Any], dict[str, str]]:
    """``users`` users of ours plus seed()'s keys, in GC_MODE ``gc_mode`` (the default if None), with the
    Events and call counts of setting it up cleared: (world, users by alias, seed()'s tokens)."""
    world = World()
    if gc_mode is not None:
        world.svc.settings = world.svc.settings.model_copy(update={"gc_mode": gc_mode})
    by_alias = await populate(world, users)
    tokens = seed(world)
    world.events.clear()
    world.reset_counts()
    return world, by_alias, tokens


async def no_drift(_: Any) -> None:
    return None


async def test_revoke_mode_revokes_only_due_keys_of_ours_and_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world, by_alias, tokens = await seeded_world(3)

    async def reconcile(_: Any) -> None:
        raise AssertionError("nothing drifted")

    with caplog.at_level(logging.INFO, logger="gateway_operator.services.sync"):
        report = await sync.resync_tier(world.svc, CODING, by_alias, reconcile)
    assert report.orphans_deleted == ["llmgw.demo.gone"]
    assert tokens["orphan"] in world.litellm.deleted
    assert tokens["foreign"] in world.litellm.keys and tokens["retired"] in world.litellm.keys
    assert len(world.litellm.live_keys()) == 5
    [(type_, reason, message)] = world.events
    assert (type_, reason) == ("Normal", "OrphanKeysRevoked")
    assert "llmgw.demo.gone (key " + tokens["orphan"][:12] in message and "spend 1.5000 USD" in message
    assert tokens["orphan"] not in message
    line = [r.getMessage() for r in caplog.records if "key gc" in r.getMessage()]
    assert line and '"alias":"llmgw.demo.gone"' in line[0] and "action=revoked" in line[0]
    assert _gauge("coding", "revoked") == 1 and _gauge("coding", "dry-run") == 0
    # Nothing left to collect: the next pass reports nothing and sets the gauge back.
    world.events.clear()
    await sync.resync_tier(world.svc, CODING, by_alias, reconcile)
    assert world.events == [] and _gauge("coding", "revoked") == 0


async def test_dry_run_reports_once_and_revokes_nothing() -> None:
    sync._last_dry_run.clear()
    world, by_alias, tokens = await seeded_world(2, gc_mode="dry-run")
    report = await sync.resync_tier(world.svc, CODING, by_alias, no_drift)
    assert report.orphans_found == ["llmgw.demo.gone"] and report.orphans_deleted == []
    assert tokens["orphan"] in world.litellm.keys and world.litellm.writes == []
    [(type_, reason, message)] = world.events
    assert (type_, reason) == ("Warning", "OrphanKeysFound") and "GC_MODE=dry-run" in message
    assert _gauge("coding", "dry-run") == 1
    await sync.resync_tier(world.svc, CODING, by_alias, no_drift)
    assert len(world.events) == 1, "an unchanged dry-run report is not re-posted every resync"


async def test_off_touches_and_reports_nothing() -> None:
    world, by_alias, tokens = await seeded_world(1, gc_mode="off")
    report = await sync.resync_tier(world.svc, CODING, by_alias, no_drift)
    assert report.orphans_deleted == report.orphans_found == [] and world.events == []
    assert tokens["orphan"] in world.litellm.keys and world.litellm.writes == []


async def test_a_failed_revoke_is_reported_and_retried_next_time() -> None:
    world, by_alias, tokens = await seeded_world(1)
    keys, _ = await sync.list_team_keys(world.svc, "llmgw-tier-coding")
    world.litellm.fail_with = [400]  # /key/delete rejected
    report = sync.SyncReport(tier="coding")
    await sync.collect_garbage(world.svc, "coding", keys, frozenset(by_alias), report)
    assert tokens["orphan"] in world.litellm.keys and report.orphans_deleted == []
    assert [r for _, r, _ in world.events] == ["OrphanKeysRevokeFailed"] and _gauge("coding", "failed") == 1
    await sync.resync_tier(world.svc, CODING, by_alias, no_drift)
    assert tokens["orphan"] in world.litellm.deleted


async def test_users_never_reconciled_are_left_to_kopf_by_the_resync() -> None:
    world = World()
    by_alias = await populate(world, 2)
    fresh = by_alias["llmgw.demo.u1"].model_copy(update={"status": type(by_alias["llmgw.demo.u1"].status)()})
    world.litellm.keys.clear()  # neither has a key yet
    reconciled: list[str] = []

    async def reconcile(user: Any) -> None:
        reconciled.append(user.ref.name)

    await sync.resync_tier(world.svc, CODING, {**by_alias, "llmgw.demo.u1": fresh}, reconcile)
    assert reconciled == ["u0"], "u1 has no status yet: kopf's create handler is about to run"


async def test_list_team_keys_falls_back_to_key_list_pages_without_tokens() -> None:
    world = World()
    await populate(world, 3)
    world.litellm.teams["llmgw-tier-coding"] = {"team_id": "llmgw-tier-coding"}
    world.reset_counts()
    keys, calls = await sync.list_team_keys(world.svc, "llmgw-tier-coding")
    assert (len(keys), calls, world.litellm.reads) == (3, 1, ["/team/info"])

    original = world.litellm.get_team_info

    def stripped(params: dict[str, str]) -> Any:
        import httpx

        response = original(params)
        body = response.json()
        for k in body["keys"]:
            k.pop("token")  # what a LiteLLM that really strips tokens would answer
        return httpx.Response(200, json=body)

    world.litellm.get_team_info = stripped  # type: ignore[method-assign]
    world.reset_counts()
    keys, calls = await sync.list_team_keys(world.svc, "llmgw-tier-coding")
    assert len(keys) == 3 and all(k.token for k in keys)
    assert world.litellm.reads == ["/team/info", "/key/list"] and calls == 2


async def test_with_watched_namespaces_keys_of_other_namespaces_are_not_judged() -> None:
    world = World()
    world.svc.settings = world.svc.settings.model_copy(update={"watch_namespaces": "team-a"})
    tokens = seed(world)  # the orphan is llmgw.demo.gone: namespace demo is not watched
    report = sync.SyncReport(tier="coding")
    keys, _ = await sync.list_team_keys(world.svc, "llmgw-tier-coding")
    await sync.collect_garbage(world.svc, "coding", keys, frozenset(), report)
    assert tokens["orphan"] in world.litellm.keys and report.orphans_deleted == []
    world.svc.settings = world.svc.settings.model_copy(update={"watch_namespaces": "team-a,demo"})
    await sync.collect_garbage(world.svc, "coding", keys, frozenset(), report)
    assert tokens["orphan"] in world.litellm.deleted


def test_alias_namespace() -> None:
    assert adoption.alias_namespace("llmgw.demo.alice") == "demo"
    assert adoption.alias_namespace("llmgw.demo.alice:retired-0123") == "demo"
    assert adoption.alias_namespace("llmgw.demo.alice:retired") == "demo"
    assert adoption.alias_namespace("someone-elses") is None and adoption.alias_namespace(None) is None


def test_cli_plan_lists_due_and_kept_keys_and_counts_foreign_ones() -> None:
    from gateway_operator.cli.cmd_keys import plan

    later = (NOW + timedelta(hours=2)).isoformat()
    keys = [
        key("llmgw.demo.bob"),
        key("llmgw.demo.carol", age=10),
        key("llmgw.demo.alice"),
        key("llmgw.demo.old-script", metadata=None),
        key("llmgw.demo.alice:retired-abc", metadata={**OURS, adoption.RETIRE_AFTER: later}),
        key("other-prefix.x"),
    ]
    due, result = plan(keys, LIVE, NOW, GRACE, dry_run=True)
    assert [c.alias for c in due] == ["llmgw.demo.bob"] and result.foreign == 1
    actions = {r["alias"]: r["action"] for r in result.rows}
    assert actions["llmgw.demo.bob"] == "would revoke"
    assert actions["llmgw.demo.carol"] == "kept (younger than the grace)"
    assert actions["llmgw.demo.alice:retired-abc"].startswith("kept until 2026-11-28T14:02:00")
    assert "llmgw.demo.alice" not in actions and "llmgw.demo.old-script" not in actions
    assert {r["age"] for r in result.rows} == {"1h", "10s"}
    _, revoking = plan(keys, LIVE, NOW, GRACE, dry_run=False)
    assert {r["alias"]: r["action"] for r in revoking.rows}["llmgw.demo.bob"] == "revoked"


async def test_a_team_too_big_for_one_answer_is_paged() -> None:
    world = World()
    await populate(world, 3)
    world.litellm.teams["llmgw-tier-coding"] = {"team_id": "llmgw-tier-coding"}
    world.reset_counts()
    keys, calls = await sync.list_team_keys(
        world.svc, "llmgw-tier-coding", expected=sync.TEAM_INFO_MAX_KEYS + 1
    )
    assert (len(keys), calls, world.litellm.reads) == (3, 1, ["/key/list"])
