"""Team membership (TEAM_MEMBERSHIP) and the finalizer's care for keys we do not own, against the local
stack's real LiteLLM 1.108.7 and kube-apiserver.

- Deletion runs in the real operator process (its default settings), behind the counting AdminProxy of
  tests/stack/operator.py (harness from test_operator.py): keys made for the same LiteLLM user outside our
  alias survive the deletion of the GatewayUser, and so does the user row that holds them.
- Membership runs the operator's services in this process (real LiteLLM and kube-apiserver clients, the
  stack's operator paused so nothing else acts), because settings.py does not declare TEAM_MEMBERSHIP yet;
  the services read it as ``settings.team_membership``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.integration.test_operator import (
    Admin,
    Harness,
    apply,
    chat_status,
    delete,
    get,
    isolated_harness,
    kubectl,
    ready_tier,
    sha,
    user,
    wait_for,
    wait_ready,
)
from tests.stack.operator import pause_stack_operator

from gateway_operator import naming
from gateway_operator.clients.kubernetes import KubernetesClient
from gateway_operator.clients.litellm import LiteLLMClient
from gateway_operator.models import (
    GatewayTierSpec,
    GatewayUserSpec,
    GatewayUserStatus,
    ObjectRef,
    TierView,
    UserView,
)
from gateway_operator.services import tiers as tier_service
from gateway_operator.services import users as user_service
from gateway_operator.services.core import Services
from gateway_operator.settings import Settings

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"it-mem-{RUN}"


def events(name: str, reason: str, namespace: str = NS) -> list[dict[str, Any]]:
    out = kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def mint() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def email(name: str) -> str:
    return f"{name}.{RUN}@company.com"


def gw_user(name: str, tier: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return user(name, tier, namespace=namespace, **{"email": email(name), **spec})


# --- deletion: the real operator ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h(stack_env: dict[str, str]) -> Iterator[Harness]:
    with isolated_harness(stack_env, NS, RUN) as harness:
        yield harness


@pytest.fixture(scope="module")
def basic(h: Harness) -> str:
    return ready_tier(f"mem-{RUN}", budget=20, rpm=50, models=("model-cheap",))


def test_deleting_a_user_keeps_keys_it_does_not_own_and_their_user_row(h: Harness, basic: str) -> None:
    apply(gw_user("keeper", basic, NS))
    wait_ready("keeper", NS)
    owner = email("keeper")
    alias = naming.key_alias(NS, "keeper")
    team = naming.team_id(basic)
    foreign_value = mint()
    foreign: list[str] = []
    for extra in ({"team_id": team}, {}):  # one in the tier's team, one in no team
        body = {"key": mint(), "user_id": owner, "key_alias": f"laptop-{RUN}-{len(foreign)}", **extra}
        if not foreign:
            body["key"] = foreign_value
        h.admin.http.post("/key/generate", json=body).raise_for_status()
        foreign.append(sha(body["key"]))
    # A retired key of ours that no Secret names any more.
    lost = h.admin.http.post(
        "/key/generate",
        json={"key": mint(), "user_id": owner, "team_id": team, "key_alias": f"{alias}:retired-0123456789ab"},
    )
    lost.raise_for_status()
    ours = h.admin.key(alias)
    assert ours is not None

    h.proxy.reset()
    delete("gatewayuser", "keeper", NS)
    wait_for("GatewayUser gone", lambda: get("gatewayuser", "keeper", NS) is None, timeout=60)
    assert h.admin.key(alias) is None and h.admin.keys(f"{alias}:retired") == []
    for token in foreign:
        info = h.admin.key_info(token)
        assert info is not None and info.get("status", "active") != "deleted", (
            "a key we do not own was revoked"
        )
    assert h.admin.user(owner) is not None, "/user/delete would have deleted the keys we do not own"
    assert "POST /user/delete" not in h.proxy.calls, h.proxy.calls
    found = wait_for("LiteLLMUserKept", lambda: events("keeper", user_service.REASON_LITELLM_USER_KEPT))
    event = found[0]
    assert event["type"] == "Warning"
    assert all(token[:12] in event["message"] and token not in event["message"] for token in foreign)
    assert foreign_value not in json.dumps(found)
    log = h.operator.log_text()
    assert all(token[:12] in log and token not in log for token in foreign) and foreign_value not in log
    for token in foreign:
        h.admin.http.post("/key/delete", json={"keys": [token]})
    h.admin.http.post("/user/delete", json={"user_ids": [owner]})


def test_deleting_a_user_without_other_keys_deletes_its_user_row(h: Harness, basic: str) -> None:
    apply(gw_user("leaver", basic, NS))
    wait_ready("leaver", NS)
    assert h.admin.user(email("leaver")) is not None
    delete("gatewayuser", "leaver", NS)
    wait_for("GatewayUser gone", lambda: get("gatewayuser", "leaver", NS) is None, timeout=60)
    assert h.admin.user(email("leaver")) is None and h.admin.key(naming.key_alias(NS, "leaver")) is None
    assert events("leaver", user_service.REASON_LITELLM_USER_KEPT) == []


# --- membership: the services against the real LiteLLM -----------------------------------------------------

MNS = f"it-memsvc-{RUN}"


class Env:
    def __init__(self, svc: Services, env: dict[str, str]):
        self.svc = svc
        self.admin = Admin(env)
        self.gateway = env["LLM_GATEWAY_URL"]
        self.events: list[tuple[str, str, str]] = []
        self.generations: dict[str, int] = {}

    @property
    def client(self) -> LiteLLMClient:
        return self.svc.litellm

    def writes(self) -> list[str]:
        return sorted(
            call for call, n in self.client.calls.items() for _ in range(n) if call.startswith("POST")
        )

    async def tier(self, name: str, **spec: Any) -> TierView:
        tier_spec = GatewayTierSpec.model_validate({"monthlyBudgetUSD": 20, "rpmLimit": 50, **spec})
        await tier_service.ensure_team(self.svc, name, tier_spec, fresh=False)
        return TierView(name=name, spec=tier_spec, team_ready=True)

    def apply_user(self, name: str, tier: str, **spec: Any) -> None:
        apply(gw_user(name, tier, MNS, **spec))

    async def view(self, name: str) -> UserView:
        body = json.loads(kubectl("get", "gatewayuser", name, "-n", MNS, "-o", "json"))
        meta = body["metadata"]
        ref = ObjectRef(name=name, namespace=MNS, uid=meta["uid"], generation=meta["generation"])
        return UserView(
            ref=ref,
            spec=GatewayUserSpec.model_validate(body["spec"]),
            status=GatewayUserStatus.model_validate(body.get("status") or {}),
        )

    async def reconcile(self, name: str, tier: TierView) -> GatewayUserStatus:
        return await user_service.reconcile_user(self.svc, await self.view(name), tier)

    def member_of(self, user_id: str) -> list[str]:
        row = self.admin.http.get("/v2/user/info", params={"user_id": user_id}).json()
        return sorted(row.get("teams") or [])

    def team(self, team_id: str) -> dict[str, Any]:
        return dict(self.admin.http.get("/team/info", params={"team_id": team_id}).json())

    def secret(self, name: str) -> str:
        import base64

        obj = get("secret", f"{name}-llm-key", MNS)
        assert obj is not None
        return base64.b64decode(obj["data"]["api-key"]).decode()


@pytest.fixture(scope="module")
def paused(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with pause_stack_operator():
        kubectl("create", "namespace", MNS)
        try:
            yield stack_env
        finally:
            kubectl("delete", "gatewayusers", "--all", "-n", MNS, "--wait=true", "--timeout=60s", check=False)
            kubectl("delete", "namespace", MNS, "--wait=false", check=False)


@contextlib.asynccontextmanager
async def services(paused: dict[str, str]) -> AsyncIterator[Env]:
    """The operator's services with real clients, in the test's own event loop."""
    settings = Settings.model_validate(
        {
            "LITELLM_ADMIN_URL": paused["LITELLM_ADMIN_URL"],
            "LITELLM_MASTER_KEY": paused["LITELLM_MASTER_KEY"],
            "GATEWAY_PUBLIC_URL": paused["LLM_GATEWAY_URL"],
        }
    ).model_copy(update={"team_membership": True})
    litellm = LiteLLMClient(settings.litellm_admin_url, SecretStr(paused["LITELLM_MASTER_KEY"]), retries=1)
    kube = await KubernetesClient.connect()
    e = Env(Services(litellm=litellm, kube=kube, settings=settings), paused)
    e.svc.events = lambda kind, ref, type_, reason, message: e.events.append((type_, reason, message))
    try:
        yield e
    finally:
        await litellm.aclose()
        await kube.aclose()


async def test_a_new_user_joins_its_tier_team_within_two_admin_calls(paused: dict[str, str]) -> None:
    async with services(paused) as env:
        await _test_a_new_user_joins_its_tier_team_within_two_admin_calls(env)


async def _test_a_new_user_joins_its_tier_team_within_two_admin_calls(env: Env) -> None:
    tier = await env.tier(f"mc-{RUN}", models=["model-cheap"])
    env.apply_user("ann", tier.name)
    env.client.calls.clear()
    status = await env.reconcile("ann", tier)
    assert status.key_id is not None
    assert env.writes() == ["POST /key/generate", "POST /user/new"] and sum(env.client.calls.values()) == 2
    ann = email("ann")
    team_id = naming.team_id(tier.name)
    assert env.member_of(ann) == [team_id]
    info = env.team(team_id)
    [membership] = [m for m in info["team_memberships"] if m["user_id"] == ann]
    assert membership.get("budget_id") is None, "a member budget would be a second budget"
    [member] = [m for m in info["team_info"]["members_with_roles"] if m.get("user_id") == ann]
    assert member["role"] == "user"
    assert chat_status(env.gateway, env.secret("ann"), "model-cheap") == 200

    env.client.calls.clear()
    await env.reconcile("ann", tier)
    assert env.writes() == [], env.client.calls
    assert sorted(env.client.calls) == ["GET /key/list", "GET /v2/user/info"]

    await user_service.delete_user(env.svc, await env.view("ann"))  # the finalizer's work
    assert env.admin.user(ann) is None
    info = env.team(team_id)
    assert ann not in json.dumps(info["team_info"]["members_with_roles"]) + json.dumps(
        info["team_memberships"]
    )


async def test_an_existing_non_member_joins_on_its_next_reconcile(paused: dict[str, str]) -> None:
    async with services(paused) as env:
        await _test_an_existing_non_member_joins_on_its_next_reconcile(env)


async def _test_an_existing_non_member_joins_on_its_next_reconcile(env: Env) -> None:
    tier = await env.tier(f"mc-{RUN}", models=["model-cheap"])
    env.apply_user("ben", tier.name)
    env.svc.settings = env.svc.settings.model_copy(update={"team_membership": False})
    await env.reconcile("ben", tier)
    ben = email("ben")
    assert env.member_of(ben) == []
    env.svc.settings = env.svc.settings.model_copy(update={"team_membership": True})
    env.client.calls.clear()
    await env.reconcile("ben", tier)
    assert env.writes() == ["POST /team/member_add"] and env.member_of(ben) == [naming.team_id(tier.name)]
    env.client.calls.clear()
    await env.reconcile("ben", tier)
    assert env.writes() == []


async def test_a_tier_change_moves_key_and_membership(paused: dict[str, str]) -> None:
    async with services(paused) as env:
        await _test_a_tier_change_moves_key_and_membership(env)


async def _test_a_tier_change_moves_key_and_membership(env: Env) -> None:
    cheap = await env.tier(f"mc-{RUN}", models=["model-cheap"])
    other = await env.tier(f"mo-{RUN}", monthlyBudgetUSD=30, models=["model-cheap", "model-balanced"])
    env.apply_user("cat", cheap.name)
    first = await env.reconcile("cat", cheap)
    value = env.secret("cat")
    cat = email("cat")
    # The user was moved once, and the operator died after joining the new team (before the key moved).
    env.apply_user("cat", other.name)
    await env.client.team_member_add(naming.team_id(other.name), cat)
    status = await env.reconcile("cat", other)
    assert status.key_id == first.key_id and env.secret("cat") == value, "same key, no rotation"
    key = env.admin.key(naming.key_alias(MNS, "cat"))
    assert key is not None and key["team_id"] == naming.team_id(other.name) and key["max_budget"] == 30
    assert env.member_of(cat) == [naming.team_id(other.name)]
    assert chat_status(env.gateway, value, "model-balanced") == 200
    env.client.calls.clear()
    await env.reconcile("cat", other)
    assert env.writes() == []


async def test_member_keys_keep_the_tier_budget_and_rpm(paused: dict[str, str]) -> None:
    async with services(paused) as env:
        await _test_member_keys_keep_the_tier_budget_and_rpm(env)


async def _test_member_keys_keep_the_tier_budget_and_rpm(env: Env) -> None:
    """Membership adds no member budget or rate limit: the key's own limits decide, as for a non-member."""
    tiny = await env.tier(f"mt-{RUN}", monthlyBudgetUSD=0.000001, rpmLimit=3, models=["model-cheap"])
    env.apply_user("dan", tiny.name)
    await env.reconcile("dan", tiny)
    assert env.member_of(email("dan")) == [naming.team_id(tiny.name)]
    value = env.secret("dan")
    codes = [chat_status(env.gateway, value, "model-cheap") for _ in range(2)]
    assert codes == [200, 402], codes  # the key's budget, as for a non-member (litellm-notes §9)
    env.apply_user("eve", tiny.name, monthlyBudgetUSD=100)
    await env.reconcile("eve", tiny)
    value = env.secret("eve")
    codes = [chat_status(env.gateway, value, "model-cheap") for _ in range(5)]
    assert codes.count(200) == 3 and codes[3:] == [429, 429], codes


async def test_a_member_sees_its_teammates_keys_in_user_info(paused: dict[str, str]) -> None:
    async with services(paused) as env:
        await _test_a_member_sees_its_teammates_keys_in_user_info(env)


async def _test_a_member_sees_its_teammates_keys_in_user_info(env: Env) -> None:
    """The price of membership, and why TEAM_MEMBERSHIP is off by default: LiteLLM's /user/info (a route
    user keys may call) embeds every key of the member's teams, with their hashes, aliases and owners."""
    tier = await env.tier(f"mp-{RUN}", models=["model-cheap"])
    for name in ("fay", "gus"):
        env.apply_user(name, tier.name)
        await env.reconcile(name, tier)
    gus = env.admin.key(naming.key_alias(MNS, "gus"))
    assert gus is not None
    answer = httpx.get(
        env.gateway.removesuffix("/v1") + "/user/info",
        headers={"Authorization": f"Bearer {env.secret('fay')}"},
        timeout=30,
    ).text
    assert gus["token"] in answer and email("gus") in answer


def test_cleanup_litellm(paused: dict[str, str]) -> None:
    """Last: what the membership tests made in LiteLLM (no finalizer ran: the operator was paused)."""
    admin = Admin(paused)
    for prefix in ("mc", "mo", "mt", "mp"):  # with their keys
        admin.http.post("/team/delete", json={"team_ids": [naming.team_id(f"{prefix}-{RUN}")]})
    users = [email(name) for name in ("ann", "ben", "cat", "dan", "eve", "fay", "gus")]
    admin.http.post("/user/delete", json={"user_ids": users})
