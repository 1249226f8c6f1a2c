"""Key rotation: the pure rules (rotation.py) and the service (services/rotation.py via the user reconcile)
against the fault-injection fakes, including a crash at every write of a rotation and of a revocation.
The same flow runs against the real LiteLLM and kube-apiserver in tests/integration/test_rotation.py and,
with the operator SIGKILLed at each step, in tests/resilience/test_rotation_faults.py."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from gateway_operator import naming
from gateway_operator import rotation as rot
from gateway_operator.clients.kubernetes import DeploymentView, K8sError
from gateway_operator.models import (
    GatewayUserSpec,
    GatewayUserStatus,
    KeyRotation,
    ObjectRef,
    UserView,
)
from gateway_operator.services import rotation as svc_rotation
from gateway_operator.services import users as svc_users
from tests.unit.fakes import Crash
from tests.unit.test_crd_schema import USER, validate, with_spec
from tests.unit.test_services_users import ALIAS, NS, SECRET, UID, World

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


# --- pure rules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("720h", 720 * 3600), ("30d", 30 * 86400), ("1h30m", 5400), ("0s", 0), ("2w", 14 * 86400), ("45s", 45)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert rot.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "1.5h", "1 h", "h", "10y", "-1h", "1h-"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        rot.parse_duration(text)


def test_key_rotation_spec_validation() -> None:
    spec = GatewayUserSpec.model_validate({"email": "a@b.co", "tier": "t", "keyRotation": {"every": "30d"}})
    assert spec.key_rotation == KeyRotation(every="30d", gracePeriod="24h")
    assert spec.key_rotation.to_k8s() == {"every": "30d", "gracePeriod": "24h"}
    assert KeyRotation.model_validate({"gracePeriod": "0s"}).grace_period == "0s"
    for bad in ({"every": "0h"}, {"every": "0s0m"}, {"every": "1 day"}, {"gracePeriod": "1.5h"}):
        with pytest.raises(ValidationError):
            KeyRotation.model_validate(bad)


@pytest.mark.parametrize(
    ("rotation", "error"),
    [
        ({"every": "30d"}, None),
        ({"every": "720h", "gracePeriod": "0s"}, None),
        ({"gracePeriod": "1h30m"}, None),
        ({"every": "0d"}, "spec.keyRotation.every must be longer than 0"),
        ({"every": "30 days"}, "keyRotation.every"),
        ({"gracePeriod": "1.5h"}, "keyRotation.gracePeriod"),
        ({"every": 30}, "keyRotation.every"),
    ],
)
def test_the_crd_validates_key_rotation_like_the_model(rotation: dict[str, Any], error: str | None) -> None:
    obj = with_spec(USER, keyRotation=rotation)
    errors = validate("GatewayUser", obj)
    if error is None:
        assert errors == []
        GatewayUserSpec.model_validate(obj["spec"])
    else:
        assert errors and error in errors[0], errors
        with pytest.raises(ValidationError):
            GatewayUserSpec.model_validate(obj["spec"])


def test_times_parse_leniently_and_print_as_utc_z() -> None:
    assert rot.parse_time("2026-11-10T12:00:00Z") == T0
    assert rot.parse_time("2026-11-10T13:00:00+01:00") == T0
    assert rot.parse_time("2026-11-10T12:00:00") == T0
    assert rot.parse_time("now") is None and rot.parse_time(None) is None
    assert rot.iso(T0 + timedelta(microseconds=5)) == "2026-11-10T12:00:00Z"


def test_on_demand_rotation_is_due_once_per_value_and_not_before_its_time() -> None:
    record = rot.Record()
    later = "2026-11-10T13:00:00Z"
    assert rot.due_trigger(None, "2026-11-10T11:00:00Z", record, None, None, T0) == (
        "annotation:2026-11-10T11:00:00Z"
    )
    assert rot.due_trigger(None, later, record, None, None, T0) is None  # in the future
    assert rot.due_trigger(None, later, record, None, None, T0 + timedelta(hours=2)) == f"annotation:{later}"
    assert rot.due_trigger(None, "please", record, None, None, T0) == "annotation:please"  # not a time: now
    handled = rot.Record(handled_rotate_at=later)
    assert rot.due_trigger(None, later, handled, None, None, T0 + timedelta(days=1)) is None
    assert rot.due_trigger(None, later, record, later, None, T0 + timedelta(days=1)) is None  # status knows
    assert rot.due_trigger(None, None, record, None, None, T0) is None


def test_scheduled_rotation_counts_from_the_last_one_or_the_key_creation() -> None:
    every = KeyRotation(every="1h")
    created = T0 - timedelta(minutes=30)
    assert rot.due_trigger(every, None, rot.Record(), None, created, T0) is None
    assert rot.due_trigger(every, None, rot.Record(), None, created, T0 + timedelta(minutes=31)) == "schedule"
    recent = rot.Record(rotated_at=T0)
    assert rot.due_trigger(every, None, recent, None, created, T0 + timedelta(minutes=59)) is None
    assert rot.due_trigger(every, None, recent, None, created, T0 + timedelta(minutes=60)) == "schedule"
    assert rot.due_trigger(KeyRotation(), None, rot.Record(), None, created, T0 + timedelta(days=999)) is None
    fields = rot.status_fields(every, recent, created)
    assert fields["next_rotation_time"] == "2026-11-10T13:00:00Z"
    assert fields["last_rotation_time"] == "2026-11-10T12:00:00Z"
    assert rot.status_fields(None, recent, created)["next_rotation_time"] is None


def test_the_step_of_a_started_rotation_follows_from_the_live_alias() -> None:
    old, new = "a" * 64, "b" * 64
    assert rot.pending_step(old, old, new) is rot.Step.RETIRE
    assert rot.pending_step(None, old, new) is rot.Step.GENERATE
    assert rot.pending_step(new, old, new) is rot.Step.SWAP
    assert rot.pending_step("c" * 64, old, new) is rot.Step.ABANDON


def test_the_secret_record_round_trips_and_absent_means_empty() -> None:
    record = rot.Record(
        rotated_at=T0,
        rotated_from="zzz",
        handled_rotate_at="x|y",
        retired=(rot.Retired("aaa", T0 + timedelta(hours=1)), rot.Retired("bbb", T0 + timedelta(hours=2))),
        previous_expires_at=T0 + timedelta(hours=2),
        pending=rot.Pending("annotation:a|b", T0 + timedelta(hours=3)),
        rollout_key_id="ccc",
    )
    annotations = rot.record_annotations(record)
    assert rot.read_record(annotations) == record
    assert set(rot.record_annotations(rot.Record()).values()) == {""}
    assert rot.read_record(rot.record_annotations(rot.Record())) == rot.Record()
    assert rot.read_record({}) == rot.Record()


def test_swap_records_the_retired_key_the_handled_request_and_a_rollout() -> None:
    started = rot.begin(rot.Record(handled_rotate_at="old"), "annotation:new", T0, "2h")
    assert started.pending == rot.Pending("annotation:new", T0 + timedelta(hours=2))
    done = rot.swapped(started, "oldkey", "newkey", T0 + timedelta(seconds=1))
    assert done.pending is None and done.handled_rotate_at == "new" and done.rollout_key_id == "newkey"
    assert done.rotated_from == "oldkey"
    assert done.retired == (rot.Retired("oldkey", T0 + timedelta(hours=2)),)
    scheduled = rot.swapped(rot.begin(done, "schedule", T0, "0s"), "newkey", "third", T0)
    assert scheduled.handled_rotate_at == "new" and [r.key_id for r in scheduled.retired] == [
        "oldkey",
        "newkey",
    ]
    assert rot.expired(scheduled, T0) == (rot.Retired("newkey", T0),)
    left = rot.without(scheduled, rot.expired(scheduled, T0), T0)
    assert [r.key_id for r in left.retired] == ["oldkey"] and left.previous_expires_at is None


def test_retired_key_expiry_is_what_the_orphan_gc_respects() -> None:
    alias = naming.retired_alias(ALIAS, "abc123abc123")
    metadata = {"managed-by": "llm-gateway-operator", rot.META_RETIRE_AFTER: "2026-11-10T12:00:00Z"}
    assert rot.retired_key_expiry(alias, metadata) == T0
    assert rot.in_grace(alias, metadata, T0 - timedelta(seconds=1))
    assert not rot.in_grace(alias, metadata, T0)
    assert rot.retired_key_expiry(ALIAS, metadata) is None, "a live alias is never a retired key"
    assert rot.retired_key_expiry(alias, {}) is None
    assert rot.retired_key_expiry(alias, {rot.META_RETIRE_AFTER: "soon"}) is None
    assert naming.parse_key_alias(alias) is None and naming.is_retired_alias(alias)
    assert naming.is_retired_alias(naming.retired_alias(ALIAS)) and not naming.is_retired_alias(ALIAS)


def test_due_users_come_from_the_indexed_status_without_api_calls() -> None:
    spec = GatewayUserSpec.model_validate({"email": "a@b.co", "tier": "t", "keyRotation": {"every": "1h"}})

    def view(name: str, rotate_at: str | None = None, **status: Any) -> UserView:
        return UserView(
            ref=ObjectRef(name=name, namespace=NS),
            spec=spec,
            status=GatewayUserStatus.model_validate(status),
            rotate_at=rotate_at,
        )

    users = [
        view("sched-due", nextRotationTime="2026-11-10T11:59:00Z"),
        view("sched-later", nextRotationTime="2026-11-10T12:30:00Z"),
        view("grace-ends", retiredKeys=[{"keyId": "k", "expiresAt": "2026-11-10T12:10:00Z"}]),
        view("asked", rotate_at="2026-11-10T12:00:00Z"),
        view("asked-handled", rotate_at="v1", handledRotateAt="v1"),
        view("asked-later", rotate_at="2026-11-10T12:05:00Z"),
        view("asked-now", rotate_at="please"),
        view("nothing"),
    ]
    due, wake = rot.due_users(users, T0)
    assert sorted(u.ref.name for u in due) == ["asked", "asked-now", "sched-due"]
    # A stable due time for a value that is not a time (the daemon's retry guard compares them).
    assert rot.next_action_at(users[-2], T0) == rot.next_action_at(users[-2], T0 + timedelta(hours=1))
    assert wake == T0 + timedelta(minutes=5)


def test_rollout_opt_in_names_the_secret() -> None:
    assert rot.wants_rollout({rot.ANNOTATION_ROLLOUT: "a-llm-key"}, "a-llm-key")
    assert rot.wants_rollout({rot.ANNOTATION_ROLLOUT: "x, a-llm-key"}, "a-llm-key")
    assert not rot.wants_rollout({rot.ANNOTATION_ROLLOUT: "b-llm-key"}, "a-llm-key")
    assert not rot.wants_rollout({}, "a-llm-key")


# --- the service, on the fakes ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class RotWorld(World):
    """The users-service world plus a clock, the rotate-at annotation and fake Deployments."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.rotate_at: str | None = None
        self.deployments: dict[str, DeploymentView] = {}
        self.rollouts: list[str] = []
        self.deployments_forbidden = False
        self.kube.list_deployments = self._list_deployments  # type: ignore[attr-defined]
        self.kube.patch_pod_template_annotations = self._patch_template  # type: ignore[attr-defined]

    def user(self) -> UserView:
        view = super().user()
        ref = view.ref.model_copy(update={"creation_timestamp": rot.iso(T0)})
        return view.model_copy(update={"ref": ref, "rotate_at": self.rotate_at})

    async def _list_deployments(self, namespace: str) -> list[DeploymentView]:
        if self.deployments_forbidden:
            raise K8sError("list Deployments", 403, "Forbidden")
        return [d for d in self.deployments.values() if d.namespace == namespace]

    async def _patch_template(self, namespace: str, name: str, annotations: dict[str, str]) -> bool:
        def apply() -> bool:
            current = self.deployments[name]
            self.deployments[name] = DeploymentView(
                name=name,
                namespace=namespace,
                annotations=current.annotations,
                template_annotations={**current.template_annotations, **annotations},
            )
            self.rollouts.append(name)
            return True

        result: bool = self.plan.check(apply)
        return result

    # --- views --------------------------------------------------------------------------------------------

    def secret(self) -> dict[str, str]:
        return dict(self.kube.secrets[(NS, SECRET)].data)

    def record(self) -> rot.Record:
        return rot.read_record(self.kube.secrets[(NS, SECRET)].annotations)

    def retired(self) -> list[dict[str, Any]]:
        return [k for k in self.litellm.keys.values() if naming.is_retired_alias(k.get("key_alias"))]

    def live(self) -> dict[str, Any]:
        [live] = [k for k in self.litellm.keys.values() if k.get("key_alias") == ALIAS]
        return live

    def assert_rotated_state(self, old_value: str) -> dict[str, Any]:
        """One live key = the Secret's api-key; the old value still works (retired, in grace) and sits in
        previous-api-key; no pending key left; nothing secret in status or events."""
        data = self.secret()
        live = self.live()
        assert naming.hash_key(data["api-key"]) == live["token"] and data["OPENAI_API_KEY"] == data["api-key"]
        assert data["api-key"] != old_value and data["previous-api-key"] == old_value
        assert naming.SECRET_PENDING_API_KEY not in data
        [retired] = self.retired()
        assert retired["token"] == naming.hash_key(old_value) and not retired.get("blocked")
        assert retired["key_alias"] == naming.retired_alias(ALIAS, retired["token"][:12])
        assert self.status()["keyId"] == live["token"][:12]
        for value in (old_value, data["api-key"]):
            self.assert_no_leak(value)
        return live


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(svc_rotation, "now", clock)
    return clock


@pytest.fixture
def rw(clock: Clock) -> RotWorld:
    return RotWorld(clock)


async def _provisioned(rw: RotWorld, spend: float = 2.5, **rotation: str) -> str:
    if rotation:
        rw.spec = {**rw.spec, "keyRotation": rotation}
    await rw.reconcile()
    value = rw.secret_value()
    assert value is not None
    rw.litellm.keys[naming.hash_key(value)]["spend"] = spend
    return value


async def test_on_demand_rotation_end_to_end(rw: RotWorld, clock: Clock) -> None:
    old = await _provisioned(rw, gracePeriod="2h")
    rw.reset_counts()
    clock.now = T0 + timedelta(minutes=1)
    rw.rotate_at = "2026-11-10T12:00:30Z"
    await rw.reconcile()
    # Admin calls: find the live key, rename it, generate the new one; then the usual reconcile's reads.
    assert rw.litellm.writes == ["/key/update", "/key/generate"]
    assert rw.kube.writes == ["replace secret alice-llm-key"] * 3 + ["status alice"]  # pending, swap, rollout
    live = rw.assert_rotated_state(old)
    assert live["spend"] == 2.5, "spend carried over"
    assert (live["max_budget"], live["rpm_limit"], live["team_id"]) == (20, 50, "llmgw-tier-coding")
    assert live["metadata"]["uid"] == UID
    [retired] = rw.retired()
    assert retired["metadata"][rot.META_RETIRE_AFTER] == "2026-11-10T14:01:00Z"
    assert retired["metadata"][rot.META_CARRIED_SPEND] == 2.5 and retired["metadata"]["managed-by"]
    status = rw.status()
    assert status["handledRotateAt"] == "2026-11-10T12:00:30Z"
    assert status["lastRotationTime"] == "2026-11-10T12:01:00Z" and "nextRotationTime" not in status
    assert status["retiredKeys"] == [{"keyId": retired["token"][:12], "expiresAt": "2026-11-10T14:01:00Z"}]
    secret = rw.kube.secrets[(NS, SECRET)]
    assert secret.annotations[rot.SECRET_PREVIOUS_EXPIRES] == "2026-11-10T14:01:00Z"
    assert [e[1] for e in rw.events] == ["KeyCreated", "KeyRotated"]

    # The same annotation again: nothing happens (once per distinct value).
    rw.reset_counts()
    clock.now += timedelta(minutes=5)
    await rw.reconcile()
    assert rw.litellm.writes == [] and rw.kube.writes == []

    # The grace period ends: the old key's spend since the rotation goes to the live key, then it goes.
    rw.litellm.keys[retired["token"]]["spend"] = 2.5 + 0.75
    rw.litellm.keys[live["token"]]["spend"] = 3.0
    clock.now = T0 + timedelta(hours=2, minutes=1)
    rw.reset_counts()
    await rw.reconcile()
    assert rw.litellm.writes == ["/key/update", "/key/delete"]
    assert rw.retired() == [] and retired["token"] in rw.litellm.deleted
    assert rw.live()["spend"] == pytest.approx(3.75)
    assert "previous-api-key" not in rw.secret()
    assert rw.status()["retiredKeys"] == [] and rw.status()["spendUSD"] == pytest.approx(3.75)
    assert rw.events[-1][1] == "RetiredKeyRevoked" and "0.7500" in rw.events[-1][2]
    rw.assert_converged()


async def test_a_normal_reconcile_costs_nothing_extra(rw: RotWorld) -> None:
    await _provisioned(rw, every="30d")
    await rw.reconcile()  # status catches up with the spend set above
    rw.reset_counts()
    await rw.reconcile()
    assert rw.litellm.writes == [] and rw.kube.writes == []
    assert sorted(rw.litellm.reads) == ["/key/list", "/user/info"]
    assert rw.status()["nextRotationTime"] == "2026-12-10T12:00:00Z"


async def test_scheduled_rotation_and_grace_zero(rw: RotWorld, clock: Clock) -> None:
    old = await _provisioned(rw, every="1h", gracePeriod="0s")
    clock.now = T0 + timedelta(minutes=59)
    await rw.reconcile()
    assert rw.secret_value() == old
    clock.now = T0 + timedelta(hours=1, seconds=1)
    await rw.reconcile()
    # Grace 0: the old key is revoked in the same reconcile.
    assert rw.retired() == [] and naming.hash_key(old) in rw.litellm.deleted
    assert "previous-api-key" not in rw.secret() and rw.secret_value() != old
    assert rw.status()["nextRotationTime"] == "2026-11-10T14:00:01Z", "an hour after this rotation"
    assert rw.live()["spend"] == 2.5
    rw.assert_converged()


async def test_second_rotation_during_grace_keeps_both_old_keys_until_their_own_expiry(
    rw: RotWorld, clock: Clock
) -> None:
    first = await _provisioned(rw, gracePeriod="1h")
    rw.rotate_at = "r1"
    await rw.reconcile()
    second = rw.secret_value()
    assert second is not None
    clock.now = T0 + timedelta(minutes=30)
    rw.rotate_at = "r2"
    await rw.reconcile()
    assert sorted(k["token"] for k in rw.retired()) == sorted(naming.hash_key(v) for v in (first, second))
    assert rw.secret()["previous-api-key"] == second
    clock.now = T0 + timedelta(hours=1)
    await rw.reconcile()
    assert [k["token"] for k in rw.retired()] == [naming.hash_key(second)]
    assert rw.secret()["previous-api-key"] == second, "the newest previous key is still in grace"
    clock.now = T0 + timedelta(hours=1, minutes=30)
    await rw.reconcile()
    assert rw.retired() == [] and "previous-api-key" not in rw.secret()
    rw.assert_converged()


async def test_opted_in_deployments_are_rolled_once(rw: RotWorld) -> None:
    await _provisioned(rw)
    rw.deployments = {
        "app": DeploymentView("app", NS, {rot.ANNOTATION_ROLLOUT: SECRET}),
        "other": DeploymentView("other", NS, {rot.ANNOTATION_ROLLOUT: "someone-else"}),
        "plain": DeploymentView("plain", NS),
    }
    rw.rotate_at = "r1"
    await rw.reconcile()
    assert rw.rollouts == ["app"]
    key_id = rw.live()["token"][:12]
    assert rw.deployments["app"].template_annotations == {rot.TEMPLATE_ANNOTATION: key_id}
    assert rw.record().rollout_key_id is None
    await rw.reconcile()
    assert rw.rollouts == ["app"]
    assert ("Normal", "RolloutTriggered", "rolled out Deployment(s) app") in rw.events


async def test_rollout_without_rbac_is_reported_not_retried_forever(rw: RotWorld) -> None:
    await _provisioned(rw)
    rw.deployments_forbidden = True
    rw.rotate_at = "r1"
    await rw.reconcile()
    assert rw.record().rollout_key_id is None
    assert [e[1] for e in rw.events][-2:] == ["KeyRotated", "RolloutFailed"]


async def test_delete_during_grace_revokes_the_retired_key_too(rw: RotWorld) -> None:
    await _provisioned(rw)
    rw.rotate_at = "r1"
    await rw.reconcile()
    assert len(rw.retired()) == 1
    await svc_users.delete_user(rw.svc, rw.user())
    assert rw.litellm.live_keys() == [] and (NS, SECRET) not in rw.kube.secrets


async def _converge_after_crash(rw: RotWorld) -> None:
    rw.plan.at = None
    for _ in range(3):  # a crash can leave the first re-run one step behind a status write
        await rw.reconcile()


ROTATION_WRITES = 6  # secret(pending), key/update(rename), key/generate, secret(swap), patch app, secret


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("point", range(ROTATION_WRITES))
async def test_crash_at_any_write_of_a_rotation_converges_to_one_rotation(
    rw: RotWorld, point: int, after: bool
) -> None:
    old = await _provisioned(rw, gracePeriod="1h")
    rw.deployments = {"app": DeploymentView("app", NS, {rot.ANNOTATION_ROLLOUT: SECRET})}
    rw.rotate_at = "r1"
    rw.reset_counts()
    rw.plan.seen = 0
    rw.plan.at, rw.plan.after = point, after
    with pytest.raises(Crash):
        await rw.reconcile()
    await _converge_after_crash(rw)
    live = rw.assert_rotated_state(old)
    assert live["spend"] == 2.5
    assert len(rw.litellm.keys) + len(rw.litellm.deleted) == 2, "exactly one new key"
    assert rw.rollouts == ["app"], "rolled out exactly once"
    assert rw.status()["handledRotateAt"] == "r1"
    # Events are at most once: one posted right after the swap is lost when the process dies there.
    assert [e[1] for e in rw.events].count("KeyRotated") == (0 if (point, after) == (3, True) else 1)
    keys_before = set(rw.litellm.keys)
    await rw.reconcile()
    assert set(rw.litellm.keys) == keys_before, "no second rotation for the same request"


REVOKE_WRITES = 3  # key/update (grace spend), key/delete, secret


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("point", range(REVOKE_WRITES))
async def test_crash_at_any_write_of_a_revocation_adds_grace_spend_once(
    rw: RotWorld, clock: Clock, point: int, after: bool
) -> None:
    await _provisioned(rw, gracePeriod="1h")
    rw.rotate_at = "r1"
    await rw.reconcile()
    [retired] = rw.retired()
    rw.litellm.keys[retired["token"]]["spend"] = 2.5 + 1.0
    clock.now = T0 + timedelta(hours=2)
    rw.plan.seen = 0
    rw.plan.at, rw.plan.after = point, after
    with pytest.raises(Crash):
        await rw.reconcile()
    await _converge_after_crash(rw)
    assert rw.retired() == [] and "previous-api-key" not in rw.secret()
    assert rw.live()["spend"] == pytest.approx(3.5), "grace-period spend added exactly once"
    rw.assert_converged()


async def test_secret_lost_mid_rotation_keeps_the_spend(rw: RotWorld) -> None:
    old = await _provisioned(rw)
    rw.rotate_at = "r1"
    rw.plan.seen = 0
    rw.plan.at, rw.plan.after = 1, True  # right after the rename
    with contextlib.suppress(Crash):
        await rw.reconcile()
    del rw.kube.secrets[(NS, SECRET)]
    await _converge_after_crash(rw)
    assert rw.live()["spend"] == 2.5
    assert naming.hash_key(rw.secret()["api-key"]) == rw.live()["token"]
    # The renamed key stays until its grace period ends (the request, whose record went with the
    # Secret, may be carried out once more: the new Secret's key is rotated too).
    assert naming.hash_key(old) in [k["token"] for k in rw.retired()]


async def test_abandoned_when_the_alias_changed_behind_our_back(rw: RotWorld) -> None:
    old = await _provisioned(rw)
    rw.rotate_at = "r1"
    rw.plan.seen = 0
    rw.plan.at, rw.plan.after = 0, True  # the pending key is in the Secret, nothing else happened
    with contextlib.suppress(Crash):
        await rw.reconcile()
    rw.plan.at = None
    # Someone swaps the live key in LiteLLM's UI meanwhile.
    row = rw.litellm.keys.pop(naming.hash_key(old))
    rw.litellm.keys["f" * 64] = {**row, "token": "f" * 64}
    await rw.reconcile()
    assert "KeyRotationAbandoned" in [e[1] for e in rw.events]
    assert naming.SECRET_PENDING_API_KEY not in rw.secret()
    assert rw.secret_value() == old and rw.live()["token"] == naming.hash_key(old), "repaired"
    # The request itself is still open: the next reconcile carries it out on the repaired key.
    await rw.reconcile()
    rw.assert_rotated_state(old)
    assert rw.status()["handledRotateAt"] == "r1"


async def test_dropping_the_schedule_clears_next_rotation_time(rw: RotWorld) -> None:
    await _provisioned(rw, every="30d")
    assert rw.status()["nextRotationTime"] == "2026-12-10T12:00:00Z"
    rw.spec = {k: v for k, v in rw.spec.items() if k != "keyRotation"}
    rw.generation = 2
    await rw.reconcile()
    # A merge patch leaves a field it does not mention: the status write sends null for it.
    assert rw.status()["nextRotationTime"] is None


async def test_the_orphan_gc_keeps_a_retired_key_until_its_grace_period_ends(rw: RotWorld) -> None:
    """The contract with services/sync.py's garbage collection (adoption.gc_candidate): the metadata a
    rotation puts on the retired key keeps it out of the GC until llmgw_retire_after (plus the GC's own
    grace), even though no GatewayUser has its alias."""
    from gateway_operator import adoption
    from gateway_operator.models import KeyRecord

    await _provisioned(rw, gracePeriod="1h")
    rw.rotate_at = "r1"
    await rw.reconcile()
    [retired] = rw.retired()
    record = KeyRecord.model_validate(retired)
    live_aliases = {ALIAS}
    expiry = rot.retired_key_expiry(record.key_alias, record.metadata)
    assert expiry == T0 + timedelta(hours=1)
    within = adoption.gc_candidate(record, live_aliases, expiry - timedelta(seconds=1), 60)
    assert within is None or not within.due, "a retired key in its grace period is never revoked by the GC"
    late = adoption.gc_candidate(record, live_aliases, expiry + timedelta(seconds=61), 60)
    assert late is not None and late.due, "one the rotation failed to revoke is collected after it"


async def test_a_secret_name_change_during_grace_carries_the_previous_key_and_the_record(
    rw: RotWorld, clock: Clock
) -> None:
    old = await _provisioned(rw, gracePeriod="1h")
    rw.rotate_at = "r1"
    await rw.reconcile()
    rw.spec = {**rw.spec, "secretName": "erin-openai"}
    rw.generation = 2
    await rw.reconcile()
    assert (NS, SECRET) not in rw.kube.secrets
    moved = rw.kube.secrets[(NS, "erin-openai")]
    assert moved.data["previous-api-key"] == old
    assert [r.key_id for r in rot.read_record(moved.annotations).retired] == [naming.hash_key(old)[:12]]
    assert rw.status()["retiredKeys"] and rw.status()["handledRotateAt"] == "r1"
    clock.now = T0 + timedelta(hours=1, minutes=1)
    await rw.reconcile()
    assert rw.retired() == [] and "previous-api-key" not in rw.kube.secrets[(NS, "erin-openai")].data
