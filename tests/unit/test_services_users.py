"""User reconcile against the fault-injection fakes: call counts, idempotence, every crash point,
rotation, drift, conflicts and deletion. The same behaviours run against the real LiteLLM and
kube-apiserver in tests/integration/test_operator*.py."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from pydantic import SecretStr

from gateway_operator import naming
from gateway_operator.clients.litellm import BackendUnavailable, LiteLLMClient
from gateway_operator.models import (
    USER_PLURAL,
    GatewayTierSpec,
    GatewayUserSpec,
    GatewayUserStatus,
    ObjectRef,
    TierView,
    UserView,
)
from gateway_operator.services import users as svc_users
from gateway_operator.services.core import Services
from gateway_operator.settings import Settings
from tests.unit.fakes import Crash, CrashPlan, FakeKube, FakeLiteLLM

NS, NAME, UID = "demo", "alice", "uid-alice"
ALIAS = naming.key_alias(NS, NAME)
SECRET = naming.secret_name(NAME)
CODING = TierView(
    name="coding",
    spec=GatewayTierSpec(monthlyBudgetUSD=20, rpmLimit=50, models=("model-balanced", "model-embed")),
    team_ready=True,
)
ARCHITECT = TierView(
    name="architect",
    spec=GatewayTierSpec(
        monthlyBudgetUSD=500, rpmLimit=100, models=("model-reasoning", "model-reasoning-opus")
    ),
    team_ready=True,
)


class World:
    def __init__(self) -> None:
        self.plan = CrashPlan()
        self.litellm = FakeLiteLLM(crash=self.plan)
        self.kube = FakeKube(crash=self.plan)
        self.events: list[tuple[str, str, str]] = []
        self.client = LiteLLMClient(
            "http://litellm.test",
            SecretStr("sk-master-test-0000000000"),
            transport=self.litellm.transport(),
            retries=0,
            backoff=0,
        )
        settings = Settings.model_validate(
            {"LITELLM_ADMIN_URL": "http://litellm.test", "GATEWAY_PUBLIC_URL": "https://gw.example.com/v1"}
        )
        self.svc = Services(
            litellm=self.client,
            kube=self.kube,
            settings=settings,  # type: ignore[arg-type]
            events=lambda kind, ref, type_, reason, message: self.events.append((type_, reason, message)),
        )
        self.spec: dict[str, Any] = {"email": "Alice@Company.com", "tier": "coding"}
        self.generation = 1

    def user(self) -> UserView:
        status = self.kube.statuses.get((USER_PLURAL, NS, NAME), {})
        return UserView(
            ref=ObjectRef(name=NAME, namespace=NS, uid=UID, generation=self.generation),
            spec=GatewayUserSpec.model_validate(self.spec),
            status=GatewayUserStatus.model_validate(status),
        )

    def status(self) -> dict[str, Any]:
        return self.kube.statuses.get((USER_PLURAL, NS, NAME), {})

    def secret_value(self) -> str | None:
        secret = self.kube.secrets.get((NS, SECRET))
        return secret.data.get("api-key") if secret else None

    async def reconcile(self, tier: TierView | None = CODING, **kwargs: Any) -> GatewayUserStatus:
        return await svc_users.reconcile_user(self.svc, self.user(), tier, **kwargs)

    def reset_counts(self) -> None:
        self.litellm.writes.clear()
        self.litellm.reads.clear()
        self.kube.writes.clear()

    def assert_converged(self) -> dict[str, Any]:
        """Exactly one live key of ours, its value in the Secret, status pointing at it, no secrets leaked."""
        live = self.litellm.live_keys()
        assert [k["key_alias"] for k in live] == [ALIAS], live
        value = self.secret_value()
        assert value is not None and naming.hash_key(value) == live[0]["token"]
        assert self.status()["keyId"] == live[0]["token"][:12]
        assert self.status()["conditions"][0]["type"] == "Ready"
        assert not [k for k in self.litellm.keys if k.startswith("sk-")]
        self.assert_no_leak(value)
        return live[0]

    def assert_no_leak(self, value: str) -> None:
        assert value not in json.dumps(list(self.kube.statuses.values()))
        assert value not in json.dumps(self.events)


@pytest.fixture
def world() -> World:
    return World()


async def test_create_takes_two_admin_calls_and_writes_the_secret(world: World) -> None:
    status = await world.reconcile()
    assert world.litellm.writes == ["/user/new", "/key/generate"]
    assert world.litellm.reads == []
    key = world.assert_converged()
    assert status.key_id == key["token"][:12]
    assert key["team_id"] == "llmgw-tier-coding" and key["user_id"] == "alice@company.com"
    assert key["models"] == ["model-balanced", "model-embed"]
    assert (key["max_budget"], key["budget_duration"], key["rpm_limit"]) == (20, "1mo", 50)
    assert key["allowed_routes"] == ["llm_api_routes", "/key/info", "/user/info"]
    assert key["metadata"] == {
        "managed-by": "llm-gateway-operator",
        "namespace": NS,
        "name": NAME,
        "uid": UID,
        "tier": "coding",
    }
    assert world.litellm.users["alice@company.com"]["max_budget"] == 20
    assert not [k for k in world.litellm.keys.values() if k.get("key_alias") is None], "auto-created key"
    secret = world.kube.secrets[(NS, SECRET)]
    value = world.secret_value()
    assert secret.data == {
        "api-key": value,
        "OPENAI_API_KEY": value,
        "base-url": "https://gw.example.com/v1",
        "OPENAI_BASE_URL": "https://gw.example.com/v1",
    }
    assert secret.labels["app.kubernetes.io/managed-by"] == "llm-gateway-operator"
    assert secret.owner_references[0]["uid"] == UID and secret.owner_references[0]["kind"] == "GatewayUser"
    ready = world.status()["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Provisioned")
    assert world.status()["spendUSD"] == 0 and world.status()["maxBudgetUSD"] == 20


async def test_rerun_on_unchanged_object_makes_no_writes(world: World) -> None:
    await world.reconcile()
    world.reset_counts()
    await world.reconcile()
    assert world.litellm.writes == []
    assert world.kube.writes == []
    assert sorted(world.litellm.reads) == ["/key/list", "/user/info"]


async def test_tier_and_override_changes_update_the_same_key_keeping_spend(world: World) -> None:
    await world.reconcile()
    token = world.assert_converged()["token"]
    world.litellm.keys[token]["spend"] = 1.25
    world.spec = {**world.spec, "tier": "architect", "monthlyBudgetUSD": 42.5, "rpmLimit": 7}
    world.generation = 2
    world.reset_counts()
    await world.reconcile(ARCHITECT)
    key = world.assert_converged()
    assert key["token"] == token and key["spend"] == 1.25
    assert (key["team_id"], key["max_budget"], key["rpm_limit"]) == ("llmgw-tier-architect", 42.5, 7)
    # Moving to another team takes two updates (LiteLLM validates the move against the current row).
    assert sorted(world.litellm.writes) == ["/key/update", "/key/update", "/user/update"]
    world.spec = {**world.spec, "rpmLimit": 8}
    world.reset_counts()
    await world.reconcile(ARCHITECT)
    assert sorted(world.litellm.writes) == ["/key/update", "/user/update"]
    assert world.status()["spendUSD"] == 1.25 and world.status()["tier"] == "architect"


async def test_suspend_blocks_and_unsuspend_unblocks(world: World) -> None:
    await world.reconcile()
    world.spec = {**world.spec, "suspended": True}
    await world.reconcile()
    assert world.assert_converged()["blocked"] is True
    assert world.status()["conditions"][0]["reason"] == "Suspended"
    world.spec = {**world.spec, "suspended": False}
    await world.reconcile()
    assert world.assert_converged()["blocked"] is False
    assert world.status()["conditions"][0]["status"] == "True"


async def test_secret_deleted_by_hand_gets_a_new_key_and_the_old_one_is_revoked(world: World) -> None:
    await world.reconcile()
    old = world.assert_converged()
    world.litellm.keys[old["token"]]["spend"] = 3.5
    del world.kube.secrets[(NS, SECRET)]
    await world.reconcile()
    new = world.assert_converged()
    assert new["token"] != old["token"]
    assert old["token"] in world.litellm.deleted
    assert new["spend"] == 3.5, "spend must carry over to the new key"
    assert any(reason == "KeyRotated" for _, reason, _ in world.events)


async def test_existing_foreign_secret_is_never_overwritten(world: World) -> None:
    await world.kube.create_secret(
        NS, SECRET, data={"api-key": "theirs"}, labels={}, annotations={}, owner_references=[]
    )
    await world.reconcile()
    assert world.litellm.writes == [] and world.litellm.reads == []
    assert world.kube.secrets[(NS, SECRET)].data == {"api-key": "theirs"}
    ready = world.status()["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "SecretConflict")
    assert SECRET in ready["message"]


async def test_missing_tier_and_email_conflict_make_no_litellm_calls(world: World) -> None:
    await world.reconcile(None)
    assert world.status()["conditions"][0]["reason"] == "TierNotFound"
    await world.reconcile(CODING, email_owner="other/alice")
    assert world.status()["conditions"][0]["reason"] == "EmailConflict"
    assert world.litellm.writes == [] and world.litellm.reads == []


async def test_key_deleted_in_litellm_is_replaced_by_a_new_value(world: World) -> None:
    await world.reconcile()
    old_value = world.secret_value()
    old = world.assert_converged()
    world.litellm.deleted[old["token"]] = world.litellm.keys.pop(old["token"])
    await world.reconcile()
    world.assert_converged()
    assert world.secret_value() != old_value, "a value deleted in LiteLLM must not be resurrected"


async def test_drift_in_litellm_is_repaired(world: World) -> None:
    await world.reconcile()
    key = world.assert_converged()
    key.update({"max_budget": 1000, "models": ["model-reasoning-opus"], "blocked": True})
    world.reset_counts()
    await world.reconcile()
    key = world.assert_converged()
    assert (key["max_budget"], key["models"], key["blocked"]) == (
        20,
        ["model-balanced", "model-embed"],
        False,
    )
    assert world.litellm.writes == ["/key/update"]
    # Alias renamed in the UI: the value is found by its hash and the alias restored (no second key).
    key["key_alias"] = "renamed-in-ui"
    await world.reconcile()
    world.assert_converged()


async def test_backend_down_raises_and_is_reported(world: World) -> None:
    world.litellm.down = True
    with pytest.raises(BackendUnavailable):
        await world.reconcile()
    await svc_users.report_error(world.svc, world.user(), BackendUnavailable("/user/new", "ConnectError"))
    ready = world.status()["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "BackendUnavailable")
    world.litellm.down = False
    await world.reconcile()
    world.assert_converged()


async def test_delete_removes_key_user_and_secret_and_is_idempotent(world: World) -> None:
    await world.reconcile()
    await svc_users.delete_user(world.svc, world.user())
    assert world.litellm.live_keys() == [] and world.litellm.users == {}
    assert (NS, SECRET) not in world.kube.secrets
    await svc_users.delete_user(world.svc, world.user())  # 404s are fine


async def test_secret_name_change_moves_the_key(world: World) -> None:
    await world.reconcile()
    token = world.assert_converged()["token"]
    world.spec = {**world.spec, "secretName": "custom-secret"}
    await world.reconcile()
    assert (NS, SECRET) not in world.kube.secrets
    moved = world.kube.secrets[(NS, "custom-secret")].data["api-key"]
    assert naming.hash_key(moved) == token


async def _run_until_converged(world: World) -> None:
    for _ in range(3):
        try:
            await world.reconcile()
            return
        except Crash:
            raise
        except Exception:  # a retried reconcile (kopf would retry it)
            continue


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("point", range(6))
async def test_crash_at_any_write_of_a_create_converges(world: World, point: int, after: bool) -> None:
    world.plan.at, world.plan.after = point, after
    with contextlib.suppress(Crash):
        await world.reconcile()
    world.plan.at = None
    await _run_until_converged(world)
    world.assert_converged()
    world.reset_counts()
    await world.reconcile()
    assert world.litellm.writes == [] and world.kube.writes == []


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("point", range(7))
async def test_crash_at_any_write_of_a_rotation_converges_and_keeps_spend(
    world: World, point: int, after: bool
) -> None:
    await world.reconcile()
    old = world.assert_converged()
    world.litellm.keys[old["token"]]["spend"] = 2.0
    del world.kube.secrets[(NS, SECRET)]
    world.plan.seen = 0
    world.plan.at, world.plan.after = point, after
    with contextlib.suppress(Crash):
        await world.reconcile()
    world.plan.at = None
    await _run_until_converged(world)
    new = world.assert_converged()
    assert new["spend"] == 2.0
    assert old["token"] not in world.litellm.keys or world.litellm.keys[old["token"]].get("blocked")
    world.reset_counts()
    await world.reconcile()
    assert world.litellm.writes == []
