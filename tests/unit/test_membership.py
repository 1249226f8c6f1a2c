"""Team membership (TEAM_MEMBERSHIP) and the finalizer's care for keys we do not own, against the
fault-injection fakes extended with LiteLLM 1.108.7's membership behaviour (read in
team_endpoints.py and internal_user_endpoints.py, checked against the real proxy in
tests/integration/test_membership.py):
- /user/new with ``teams`` adds the member in the same call (role "user", no member budget);
- /team/member_add of a member: 400 "User already in team" (the message lists every member);
- /team/member_delete of a non-member: 400 "User not found in team"; of a member: ALSO deletes every
  key of that user in that team;
- a key moves team only if its user is a member of the new team;
- /user/delete deletes the user's keys (and memberships).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import httpx
import pytest

from gateway_operator import desired as want
from gateway_operator import naming
from gateway_operator.clients.litellm import LiteLLMClient
from gateway_operator.services import users as svc_users
from tests.unit.fakes import Crash, FakeLiteLLM, _error, _hash
from tests.unit.test_services_users import ALIAS, ARCHITECT, CODING, SECRET, World

USER_ID = "alice@company.com"
CODING_TEAM, ARCHITECT_TEAM = naming.team_id("coding"), naming.team_id("architect")


class MemberFakeLiteLLM(FakeLiteLLM):
    """FakeLiteLLM plus team membership (kept on the user row as ``teams``, like LiteLLM's user.teams)."""

    def _teams(self, user_id: str) -> list[str]:
        return list(self.users.get(user_id, {}).get("teams") or [])

    drop_member_add: bool = False  # /user/new's member add fails (LiteLLM logs it, answers 200)

    def post_user_new(self, body: dict[str, Any]) -> httpx.Response:
        response = super().post_user_new(body)
        if response.status_code != 200:
            return response
        teams = [] if self.drop_member_add else [t for t in body.get("teams") or [] if t in self.teams]
        self.users[body["user_id"]]["teams"] = teams
        answer = {k: v for k, v in body.items() if k != "teams"}
        return httpx.Response(200, json={**answer, "teams": teams} if "teams" in body else answer)

    def get_user_info(self, params: dict[str, str]) -> httpx.Response:
        user = self.users.get(params["user_id"])
        if user is None:
            return _error(404, f"User {params['user_id']} not found")
        return httpx.Response(200, json={"user_id": user["user_id"], "user_info": user, "keys": []})

    def get_v2_user_info(self, params: dict[str, str]) -> httpx.Response:
        user = self.users.get(params["user_id"])
        if user is None:
            return _error(404, f"User not found: {params['user_id']}")
        return httpx.Response(200, json={**user, "teams": self._teams(user["user_id"])})

    def post_team_member_add(self, body: dict[str, Any]) -> httpx.Response:
        user_id, team_id = body["member"]["user_id"], body["team_id"]
        assert body["member"].get("role") == "user" and "max_budget_in_team" not in body
        if team_id not in self.teams:
            return _error(404, f"Team not found, passed team_id={team_id}")
        if team_id in self._teams(user_id):
            return _error(400, f"User already in team. Member: user_id={user_id}. Existing members=[...]")
        self.users.setdefault(user_id, {"user_id": user_id})["teams"] = [*self._teams(user_id), team_id]
        return httpx.Response(200, json={"team_id": team_id})

    def post_team_member_delete(self, body: dict[str, Any]) -> httpx.Response:
        user_id, team_id = body["user_id"], body["team_id"]
        if team_id not in self.teams:
            return _error(400, f"Team id={team_id} does not exist in db")
        if team_id not in self._teams(user_id):
            return _error(400, "User not found in team")
        self.users[user_id]["teams"] = [t for t in self._teams(user_id) if t != team_id]
        for token in [
            t for t, k in self.keys.items() if (k.get("user_id"), k.get("team_id")) == (user_id, team_id)
        ]:
            self.deleted[token] = self.keys.pop(token)
        return httpx.Response(200, json={"team_id": team_id})

    def post_key_update(self, body: dict[str, Any]) -> httpx.Response:
        """The base fake refuses every move of a key with a user (it has no members): allow it for a member
        of the new team."""
        row = self.keys.get(body["key"] if not body["key"].startswith("sk-") else _hash(body["key"]))
        user_id = row.get("user_id") if row else None
        if row is None or not user_id or body.get("team_id") in (None, row.get("team_id")):
            return super().post_key_update(body)
        if body["team_id"] not in self._teams(str(user_id)):
            return _error(403, f"User={user_id} is not a member of the team")
        row["user_id"] = None  # checked above
        response = super().post_key_update(body)
        row["user_id"] = body.get("user_id", user_id)
        return response


class MemberWorld(World):
    def __init__(self, *, membership: bool = True) -> None:
        super().__init__()
        self.litellm = MemberFakeLiteLLM(crash=self.plan)
        for name in ("coding", "architect"):
            self.litellm.teams[naming.team_id(name)] = {"team_id": naming.team_id(name), "models": []}
        self.client = LiteLLMClient(
            "http://litellm.test",
            self.svc.litellm._master_key,
            transport=self.litellm.transport(),
            retries=0,
            backoff=0,
        )
        self.svc.litellm = self.client
        self.set_membership(membership)

    def set_membership(self, on: bool) -> None:
        self.svc.settings = self.svc.settings.model_copy(update={"team_membership": on})

    def teams(self) -> list[str]:
        return sorted(self.litellm.users.get(USER_ID, {}).get("teams") or [])

    def foreign_key(self, alias: str | None, team_id: str | None, value: str) -> dict[str, Any]:
        return self.litellm._store_key(value, {"key_alias": alias, "team_id": team_id, "user_id": USER_ID})


@pytest.fixture
def mw() -> MemberWorld:
    return MemberWorld()


async def run_until_converged(world: World, tier: Any = CODING) -> None:
    for _ in range(4):
        try:
            await world.reconcile(tier)
            return
        except Crash:
            raise
        except Exception:  # kopf retries a failed reconcile
            continue
    await world.reconcile(tier)


# --- pure ------------------------------------------------------------------------------------------------


def test_membership_changes_leave_only_our_other_tier_teams() -> None:
    desired = want.DesiredUser(USER_ID, USER_ID, None, (), 1.0, "1mo", 1, None, team_id=ARCHITECT_TEAM)
    changes = want.membership_changes(desired, [CODING_TEAM, "someone-elses-team", "llmgw-tier-old"])
    assert changes.join == ARCHITECT_TEAM
    assert changes.leave == (CODING_TEAM, "llmgw-tier-old")
    assert not want.membership_changes(desired, [ARCHITECT_TEAM, "someone-elses-team"])
    unmanaged = want.DesiredUser(USER_ID, USER_ID, None, (), 1.0, "1mo", 1, None)
    assert not want.membership_changes(unmanaged, [CODING_TEAM]), "off: never leave the key's team"
    assert "teams" not in unmanaged.create_body()
    assert desired.create_body()["teams"] == [ARCHITECT_TEAM]


# --- Task A: membership ----------------------------------------------------------------------------------


async def test_create_joins_the_tier_team_in_the_same_two_admin_calls(mw: MemberWorld) -> None:
    await mw.reconcile()
    assert mw.litellm.writes == ["/user/new", "/key/generate"] and mw.litellm.reads == []
    assert mw.teams() == [CODING_TEAM]
    key = mw.assert_converged()
    assert (key["team_id"], key["user_id"], key["max_budget"], key["rpm_limit"]) == (
        CODING_TEAM,
        USER_ID,
        20,
        50,
    )


async def test_a_member_add_that_user_new_swallowed_is_done_in_the_same_reconcile(mw: MemberWorld) -> None:
    mw.litellm.drop_member_add = True
    await mw.reconcile()
    assert mw.litellm.writes == ["/user/new", "/team/member_add", "/key/generate"]
    assert mw.teams() == [CODING_TEAM]
    mw.assert_converged()


async def test_no_op_reconcile_of_a_member_writes_nothing_and_reads_the_light_user_row(
    mw: MemberWorld,
) -> None:
    await mw.reconcile()
    mw.reset_counts()
    await mw.reconcile()
    assert mw.litellm.writes == [] and mw.kube.writes == []
    assert sorted(mw.litellm.reads) == ["/key/list", "/v2/user/info"], "no /user/info: O(team) for a member"


async def test_an_existing_non_member_joins_once_on_its_next_reconcile() -> None:
    world = MemberWorld(membership=False)
    await world.reconcile()
    assert world.teams() == []
    world.reset_counts()
    await world.reconcile()
    assert world.litellm.writes == [], "membership off: nothing to do"
    world.set_membership(True)
    await world.reconcile()
    assert world.litellm.writes == ["/team/member_add"] and world.teams() == [CODING_TEAM]
    world.reset_counts()
    await world.reconcile()
    assert world.litellm.writes == [] and world.kube.writes == []
    world.assert_converged()


async def test_switching_membership_off_never_leaves_the_team_holding_the_key(mw: MemberWorld) -> None:
    await mw.reconcile()
    mw.set_membership(False)
    mw.reset_counts()
    await mw.reconcile()
    assert mw.litellm.writes == [] and mw.teams() == [CODING_TEAM]
    mw.assert_converged()


async def test_tier_change_moves_key_and_membership_keeping_spend(mw: MemberWorld) -> None:
    await mw.reconcile()
    token = mw.assert_converged()["token"]
    mw.litellm.keys[token]["spend"] = 4.5
    mw.spec = {**mw.spec, "tier": "architect"}
    mw.generation += 1
    mw.reset_counts()
    await mw.reconcile(ARCHITECT)
    writes = ["/user/update", "/team/member_add", "/key/update", "/key/update", "/team/member_delete"]
    assert mw.litellm.writes == writes, "joined before the key moves in, left after it moved out"
    assert mw.teams() == [ARCHITECT_TEAM]
    key = mw.assert_converged()
    assert (key["token"], key["team_id"], key["spend"], key["max_budget"]) == (
        token,
        ARCHITECT_TEAM,
        4.5,
        500,
    )
    mw.reset_counts()
    await mw.reconcile(ARCHITECT)
    assert mw.litellm.writes == []


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("point", range(6))
async def test_crash_at_any_write_of_a_tier_change_converges(
    mw: MemberWorld, point: int, after: bool
) -> None:
    await mw.reconcile()
    token = mw.assert_converged()["token"]
    mw.spec = {**mw.spec, "tier": "architect"}
    mw.generation += 1
    mw.plan.seen = 0
    mw.plan.at, mw.plan.after = point, after
    with contextlib.suppress(Crash):
        await mw.reconcile(ARCHITECT)
    mw.plan.at = None
    await run_until_converged(mw, ARCHITECT)
    key = mw.assert_converged()
    assert (key["token"], key["team_id"]) == (token, ARCHITECT_TEAM), "the key survived the move"
    assert mw.teams() == [ARCHITECT_TEAM]
    mw.reset_counts()
    await mw.reconcile(ARCHITECT)
    assert mw.litellm.writes == [] and mw.kube.writes == []


async def test_old_team_is_left_only_once_no_key_of_the_user_is_left_in_it(mw: MemberWorld) -> None:
    await mw.reconcile()
    # A rotation's previous key, still valid during its grace period, in the old tier's team.
    grace = mw.foreign_key(naming.retired_alias(ALIAS, "0123456789ab"), CODING_TEAM, "sk-grace-" + "g" * 40)
    mw.spec = {**mw.spec, "tier": "architect"}
    mw.generation += 1
    await mw.reconcile(ARCHITECT)
    assert grace["token"] in mw.litellm.keys, "leaving the old team would have deleted the key in grace"
    assert mw.teams() == [ARCHITECT_TEAM, CODING_TEAM]
    del mw.litellm.keys[grace["token"]]  # the grace period ends, the rotation revokes it
    mw.reset_counts()
    await mw.reconcile(ARCHITECT)
    assert mw.litellm.writes == ["/team/member_delete"] and mw.teams() == [ARCHITECT_TEAM]
    mw.assert_converged()


async def test_a_team_someone_else_added_the_user_to_is_left_alone(mw: MemberWorld) -> None:
    mw.litellm.teams["research"] = {"team_id": "research"}
    await mw.reconcile()
    mw.litellm.users[USER_ID]["teams"].append("research")
    mw.reset_counts()
    await mw.reconcile()
    assert mw.litellm.writes == [] and mw.teams() == [CODING_TEAM, "research"]


# --- Task B: the finalizer and keys we do not own ----------------------------------------------------------


async def test_delete_without_foreign_keys_removes_user_row_and_every_key_of_ours(mw: MemberWorld) -> None:
    await mw.reconcile()
    # A retired key the Secret does not name (the Secret was lost mid-rotation).
    lost = mw.foreign_key(naming.retired_alias(ALIAS, "feedfacecafe"), CODING_TEAM, "sk-lost-" + "l" * 40)
    await svc_users.delete_user(mw.svc, mw.user())
    assert mw.litellm.live_keys() == [] and lost["token"] in mw.litellm.deleted
    assert USER_ID not in mw.litellm.users
    assert ("demo", SECRET) not in mw.kube.secrets
    assert not [e for e in mw.events if e[1] == svc_users.REASON_LITELLM_USER_KEPT]


@pytest.mark.parametrize("team", [None, CODING_TEAM, "research"], ids=["no-team", "tier-team", "other-team"])
async def test_delete_keeps_the_user_row_and_foreign_keys(
    mw: MemberWorld, team: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    mw.litellm.teams["research"] = {"team_id": "research"}
    await mw.reconcile()
    ours = mw.assert_converged()["token"]
    value = "sk-foreign-" + "f" * 40
    foreign = mw.foreign_key("laptop-key", team, value)
    caplog.set_level(logging.INFO)
    for _ in range(2):  # a retry after the finalizer ran (or died) once is a no-op
        await svc_users.delete_user(mw.svc, mw.user())
    assert ours in mw.litellm.deleted and foreign["token"] in mw.litellm.keys
    assert USER_ID in mw.litellm.users, "/user/delete would have deleted the foreign key"
    # The tier team is left unless the foreign key lives there (leaving would delete it).
    assert mw.teams() == ([CODING_TEAM] if team == CODING_TEAM else [])
    kept = [m for t, r, m in mw.events if r == svc_users.REASON_LITELLM_USER_KEPT]
    assert kept and all(foreign["token"][:12] in m and foreign["token"] not in m for m in kept)
    assert foreign["token"][:12] in caplog.text and value not in caplog.text
    assert value not in json.dumps(mw.events) and foreign["token"] not in caplog.text


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("point", range(4))
async def test_crash_at_any_write_of_a_delete_converges(mw: MemberWorld, point: int, after: bool) -> None:
    await mw.reconcile()
    foreign = mw.foreign_key("laptop-key", None, "sk-foreign-" + "f" * 40)
    mw.foreign_key(naming.retired_alias(ALIAS, "feedfacecafe"), CODING_TEAM, "sk-lost-" + "l" * 40)
    mw.plan.seen = 0
    mw.plan.at, mw.plan.after = point, after
    with contextlib.suppress(Crash):
        await svc_users.delete_user(mw.svc, mw.user())
    mw.plan.at = None
    await svc_users.delete_user(mw.svc, mw.user())
    assert mw.litellm.live_keys() == [] and foreign["token"] in mw.litellm.keys
    assert USER_ID in mw.litellm.users and mw.teams() == []
    assert ("demo", SECRET) not in mw.kube.secrets


async def test_delete_with_membership_off_keeps_foreign_keys_too() -> None:
    world = MemberWorld(membership=False)
    await world.reconcile()
    foreign = world.foreign_key(None, CODING_TEAM, "sk-foreign-" + "f" * 40)
    await svc_users.delete_user(world.svc, world.user())
    assert foreign["token"] in world.litellm.keys and USER_ID in world.litellm.users
    assert "/team/member_delete" not in world.litellm.writes and "/v2/user/info" not in world.litellm.reads


async def test_delete_leaves_the_litellm_user_to_the_next_holder_of_the_email(mw: MemberWorld) -> None:
    await mw.reconcile()
    mw.reset_counts()
    await svc_users.delete_user(mw.svc, mw.user(), delete_litellm_user=False)
    assert (
        mw.litellm.writes == ["/key/delete"] and USER_ID in mw.litellm.users and mw.teams() == [CODING_TEAM]
    )


async def test_key_delete_sends_tokens_and_aliases_separately() -> None:
    """LiteLLM 1.108.7 ignores ``key_aliases`` when ``keys`` is in the same body."""
    fake = FakeLiteLLM()
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return fake.handle(request)

    fake._store_key("sk-a-" + "a" * 40, {"key_alias": "a"})
    fake._store_key("sk-b-" + "b" * 40, {"key_alias": "b"})
    async with LiteLLMClient(
        "http://x", World().svc.litellm._master_key, transport=httpx.MockTransport(handle)
    ) as c:
        assert await c.key_delete(tokens=[_hash("sk-a-" + "a" * 40)], aliases=["b"])
    assert bodies == [{"keys": [_hash("sk-a-" + "a" * 40)]}, {"key_aliases": ["b"]}] and fake.keys == {}
