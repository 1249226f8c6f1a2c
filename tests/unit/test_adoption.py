"""Adoption policy: the pure ownership decision, and the user reconcile with a key under our alias that
the operator did not create (both policies, per-user override), against the fault-injection fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway_operator import adoption, naming
from gateway_operator.adoption import Action, AdoptionPolicy, Owner
from gateway_operator.models import KeyRecord
from gateway_operator.settings import Settings
from tests.unit.test_crd_schema import USER, validate, with_spec
from tests.unit.test_services_users import ALIAS, UID, World

OURS = {"managed-by": "llm-gateway-operator", "uid": UID, "namespace": "demo", "name": "alice"}
FOREIGN_VALUE = "sk-foreign-onboarding-script-0000000000000000000000"


def key(metadata: dict[str, Any] | None = None, **fields: Any) -> KeyRecord:
    return KeyRecord.model_validate(
        {"token": "f" * 64, "key_alias": ALIAS, "metadata": metadata, "spend": 1.5, **fields}
    )


# --- the pure decision ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "owner"),
    [
        (OURS, Owner.THIS_USER),
        ({**OURS, "uid": "uid-of-an-earlier-alice"}, Owner.EARLIER_USER),
        ({"managed-by": "llm-gateway-operator"}, Owner.EARLIER_USER),
        (None, Owner.FOREIGN),
        ({"uid": UID}, Owner.FOREIGN),  # a uid alone does not make it ours
        ({"managed-by": "onboard_users.py"}, Owner.FOREIGN),
    ],
)
def test_owner_is_read_from_the_metadata_the_operator_writes(
    metadata: dict[str, Any] | None, owner: Owner
) -> None:
    assert adoption.owner(key(metadata), UID) is owner


@pytest.mark.parametrize("policy", list(AdoptionPolicy))
def test_keys_of_ours_are_replaced_whatever_the_policy(policy: AdoptionPolicy) -> None:
    assert adoption.decide(key(OURS), UID, policy) is Action.REPLACE
    earlier = key({**OURS, "uid": "uid-earlier"})
    assert adoption.decide(earlier, UID, policy) is Action.REPLACE


def test_foreign_keys_follow_the_policy() -> None:
    assert adoption.decide(key(None), UID, AdoptionPolicy.ADOPT) is Action.ADOPT
    assert adoption.decide(key(None), UID, AdoptionPolicy.IGNORE) is Action.LEAVE


def test_the_user_policy_wins_over_the_operator_default() -> None:
    assert adoption.effective_policy(None, "Ignore") is AdoptionPolicy.IGNORE
    assert adoption.effective_policy("Adopt", "Ignore") is AdoptionPolicy.ADOPT
    assert adoption.effective_policy("Ignore", AdoptionPolicy.ADOPT) is AdoptionPolicy.IGNORE
    with pytest.raises(ValueError):
        adoption.effective_policy("Steal", "Ignore")


def test_the_default_policy_is_ignore_in_settings_and_code() -> None:
    assert Settings().adoption_policy == "Ignore" == adoption.DEFAULT_POLICY
    assert Settings.model_validate({"ADOPTION_POLICY": "Adopt"}).adoption_policy == "Adopt"
    with pytest.raises(ValueError):
        Settings.model_validate({"ADOPTION_POLICY": "adopt-everything"})


def test_the_conflict_message_says_what_to_do_and_never_holds_the_key() -> None:
    message = adoption.conflict_message(key(None, team_id="llmgw-tier-coding"), ALIAS)
    assert "spec.adoptionPolicy: Adopt" in message and "delete that key in LiteLLM" in message
    assert ALIAS in message and "ffffffffffff" in message and "f" * 13 not in message


def test_the_crd_accepts_only_the_two_policies() -> None:
    assert validate("GatewayUser", with_spec(USER, adoptionPolicy="Adopt")) == []
    assert validate("GatewayUser", with_spec(USER, adoptionPolicy="Ignore")) == []
    errors = validate("GatewayUser", with_spec(USER, adoptionPolicy="Steal"))
    assert any("spec.adoptionPolicy" in e for e in errors), errors


# --- the reconcile ------------------------------------------------------------------------------------


@pytest.fixture
def world() -> World:
    return World()


def foreign(world: World, **fields: Any) -> dict[str, Any]:
    """A key under our alias as the previous generation's onboarding script made it (no metadata)."""
    return world.litellm._store_key(
        FOREIGN_VALUE,
        {"key_alias": ALIAS, "team_id": "legacy-team", "spend": 3.25, "max_budget": 50, **fields},
    )


def with_policy(world: World, policy: str) -> None:
    world.svc.settings = world.svc.settings.model_copy(update={"adoption_policy": policy})


async def test_ignore_leaves_a_foreign_key_untouched_and_reports_key_conflict(world: World) -> None:
    row = dict(foreign(world))
    status = await world.reconcile()
    ready = status.conditions[0]
    assert (ready.status, ready.reason) == ("False", "KeyConflict")
    assert "spec.adoptionPolicy: Adopt" in ready.message
    assert world.litellm.keys[row["token"]] == row, "the foreign key was changed"
    assert [k["key_alias"] for k in world.litellm.live_keys()] == [ALIAS]  # no duplicate either
    assert status.key_id is None
    assert ("Warning", "KeyConflict") in [(t, r) for t, r, _ in world.events]
    # A second pass changes nothing and posts no second Event.
    world.reset_counts()
    events = len(world.events)
    await world.reconcile()
    assert world.litellm.keys[row["token"]] == row and world.litellm.writes == []
    assert len(world.events) == events
    world.assert_no_leak(FOREIGN_VALUE)


@pytest.mark.parametrize("owner", [None, "alice@company.com"])
async def test_deleting_a_user_in_conflict_leaves_the_foreign_key(world: World, owner: str | None) -> None:
    row = dict(foreign(world, user_id=owner))  # the old script made keys for the user's email
    await world.reconcile()
    from gateway_operator.services import users as svc_users

    await svc_users.delete_user(world.svc, world.user())
    assert row["token"] in world.litellm.keys, "the finalizer revoked a key that is not ours"


async def test_adopt_replaces_the_foreign_key_carrying_its_spend(world: World) -> None:
    with_policy(world, "Adopt")
    row = foreign(world)
    status = await world.reconcile()
    live = world.assert_converged()
    assert live["token"] != row["token"] and row["token"] in world.litellm.deleted
    assert live["spend"] == 3.25 and live["metadata"]["uid"] == UID
    assert live["team_id"] == "llmgw-tier-coding" and live["max_budget"] == 20
    assert status.conditions[0].status == "True"
    adopted = [m for t, r, m in world.events if r == "KeyAdopted"]
    assert len(adopted) == 1 and row["token"][:12] in adopted[0] and "3.2500" in adopted[0]
    world.assert_no_leak(FOREIGN_VALUE)
    assert FOREIGN_VALUE not in str(world.events)


async def test_switching_a_conflicted_user_to_adopt_converges(world: World) -> None:
    row = foreign(world)
    await world.reconcile()
    with_policy(world, "Adopt")
    await world.reconcile()
    live = world.assert_converged()
    assert row["token"] in world.litellm.deleted and live["spend"] == 3.25


async def test_the_per_user_policy_overrides_the_operator_setting(world: World) -> None:
    world.spec["adoptionPolicy"] = "Adopt"
    row = foreign(world)
    await world.reconcile()
    world.assert_converged()
    assert row["token"] in world.litellm.deleted


async def test_a_key_of_an_earlier_user_of_the_same_name_is_replaced_without_asking(world: World) -> None:
    row = world.litellm._store_key(
        FOREIGN_VALUE,
        {
            "key_alias": ALIAS,
            "team_id": "llmgw-tier-coding",
            "spend": 1.0,
            "metadata": {**OURS, "uid": "old"},
        },
    )
    status = await world.reconcile()  # policy Ignore: does not apply to keys of ours
    assert status.conditions[0].status == "True"
    assert world.assert_converged()["spend"] == 1.0 and row["token"] in world.litellm.deleted
    assert "KeyAdopted" not in [r for _, r, _ in world.events]


def test_may_hold_foreign_key_only_without_a_key_of_ours_or_in_conflict() -> None:
    from gateway_operator.models import Condition, GatewayUserStatus

    assert adoption.may_hold_foreign_key(GatewayUserStatus())
    ok = Condition(type="Ready", status="True", reason="Provisioned")
    assert not adoption.may_hold_foreign_key(GatewayUserStatus(keyId="abc", conditions=(ok,)))
    conflict = Condition(type="Ready", status="False", reason="KeyConflict")
    assert adoption.may_hold_foreign_key(GatewayUserStatus(keyId="abc", conditions=(conflict,)))


def test_parse_time_accepts_z_and_offsets() -> None:
    assert adoption.parse_time("2026-11-28T10:00:00Z") == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert adoption.parse_time("2026-11-28T11:00:00+01:00") == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert adoption.parse_time("yesterday") is None and adoption.parse_time(None) is None
    naive = datetime(2026, 1, 1) + timedelta(hours=1)
    assert adoption.parse_time(naive) == naive.replace(tzinfo=UTC)
    assert naming.KEY_ALIAS_PREFIX == "llmgw."
