"""The kopf layer's one error-mapping place, invalid specs and email ownership (no cluster needed: the
handlers' helpers take the indexes as plain mappings)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from gateway_operator import handlers
from gateway_operator.models import USER_PLURAL, GatewayUserSpec, ObjectRef, UserView
from tests.unit.test_services_users import NAME, NS, UID, World

TIERS = {
    "coding": [
        {
            "spec": {"monthlyBudgetUSD": 20, "rpmLimit": 50, "models": ["model-balanced"]},
            "status": {"teamId": "llmgw-tier-coding"},
        }
    ]
}


def put_user(world: World, spec: dict[str, Any]) -> None:
    world.kube.objects[(USER_PLURAL, NS, NAME)] = {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "creationTimestamp": "t"},
        "spec": spec,
    }


async def run(world: World, users: dict[Any, Any] | None = None) -> None:
    await handlers._reconcile_user(world.svc, NS, NAME, TIERS, users or {})  # type: ignore[arg-type]


async def test_invalid_spec_is_permanent_with_zero_litellm_calls() -> None:
    world = World()
    put_user(world, {"email": "not-an-email", "tier": "coding"})
    with pytest.raises(kopf.PermanentError, match=r"spec\.email"):
        await run(world)
    assert world.litellm.reads == [] and world.litellm.writes == []
    condition = world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")


async def test_backend_down_is_a_temporary_error_with_a_condition() -> None:
    world = World()
    put_user(world, {"email": "alice@company.com", "tier": "coding"})
    world.litellm.down = True
    with pytest.raises(kopf.TemporaryError) as caught:
        await run(world)
    assert caught.value.delay == 1
    condition = world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "BackendUnavailable")
    world.litellm.down = False
    await run(world)
    assert world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]["status"] == "True"


async def test_rejected_request_is_permanent() -> None:
    world = World()
    put_user(world, {"email": "alice@company.com", "tier": "coding"})
    world.litellm.fail_with = [422]
    with pytest.raises(kopf.PermanentError):
        await run(world)
    assert world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]["reason"] == "BackendRejected"


def view(name: str, namespace: str, email: str, created: str, uid: str) -> UserView:
    return UserView(
        ref=ObjectRef(name=name, namespace=namespace, uid=uid, creation_timestamp=created),
        spec=GatewayUserSpec(email=email, tier="coding"),
    )


def test_the_oldest_gateway_user_owns_an_email() -> None:
    first = view("a", "ns1", "Same@x.io", "2026-01-01T00:00:00Z", "1")
    second = view("b", "ns2", "same@x.io", "2026-01-02T00:00:00Z", "2")
    other = view("c", "ns2", "other@x.io", "2025-01-01T00:00:00Z", "3")
    everyone = [first, second, other]
    assert handlers._email_owner(first, everyone) is None
    assert handlers._email_owner(second, everyone) == "ns1/a"
    assert handlers._email_owner(other, everyone) is None


async def test_users_are_indexed_by_email_too_without_being_counted_twice() -> None:
    from kopf._core.engines.indexing import OperatorIndexer

    indexer = OperatorIndexer()

    def body(name: str, email: str, uid: str) -> kopf.Body:
        raw = {
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": uid},
            "spec": {"email": email, "tier": "coding"},
        }
        return kopf.Body(raw)

    for name, email, uid in (("a", "Same@x.io", "1"), ("b", "same@x.io", "2"), ("c", "c@x.io", "3")):
        indexer.replace(uid, await handlers.gw_users(body(name, email, uid), "ns", name))
    index: Any = indexer.index
    assert sorted(u.ref.name for u in handlers._all_users(index)) == ["a", "b", "c"]
    assert sorted(u.ref.name for u in handlers._same_email("SAME@x.io", index)) == ["a", "b"]
    # b changes its email: it leaves the old email's entry, and a owns its email alone again.
    indexer.replace("2", await handlers.gw_users(body("b", "b@x.io", "2"), "ns", "b"))
    assert [u.ref.name for u in handlers._same_email("same@x.io", index)] == ["a"]
    assert [u.ref.name for u in handlers._same_email("b@x.io", index)] == ["b"]
    indexer.discard("1")  # a deleted
    assert handlers._same_email("same@x.io", index) == []
    assert sorted(u.ref.name for u in handlers._all_users(index)) == ["b", "c"]


def count_reads(world: World) -> list[str]:
    """The names of the objects the operator GETs from now on (appended as they are read)."""
    reads: list[str] = []
    real_get = world.kube.get_object

    async def counting_get(plural: str, name: str, namespace: str | None = None) -> Any:
        reads.append(name)
        return await real_get(plural, name, namespace)

    world.kube.get_object = counting_get  # type: ignore[method-assign]
    return reads


async def test_a_first_create_uses_the_watch_body_and_a_retry_reads_the_object() -> None:
    world = World()
    put_user(world, {"email": "alice@company.com", "tier": "coding"})
    body = kopf.Body(world.kube.objects[(USER_PLURAL, NS, NAME)])
    reads = count_reads(world)
    memo = kopf.Memo(services=world.svc)
    kwargs: dict[str, Any] = dict(namespace=NS, name=NAME, memo=memo, gw_tiers=TIERS, gw_users={}, body=body)
    await handlers.user_reconcile(retry=0, reason=kopf.Reason.CREATE, **kwargs)
    assert reads == []
    assert world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]["status"] == "True"
    # A retry (or an update, or a resume) compares with the object as it is now: read fresh.
    await handlers.user_reconcile(retry=1, reason=kopf.Reason.CREATE, **kwargs)
    await handlers.user_reconcile(retry=0, reason=kopf.Reason.UPDATE, **kwargs)
    assert reads == [NAME, NAME]
    assert len(world.litellm.keys) == 1


async def test_a_missing_peering_object_is_said_at_start(caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    from gateway_operator.clients.kubernetes import KubernetesClient

    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/team-b/kopfpeerings/llmgw"):
            return httpx.Response(200, json={"kind": "KopfPeering"})
        if "/team-c/" in request.url.path:
            return httpx.Response(403, json={"kind": "Status", "code": 403})
        return httpx.Response(404, json={"kind": "Status", "code": 404})

    kube = KubernetesClient(
        kopf.ConnectionInfo(server="http://k8s.test"), transport=httpx.MockTransport(answer)
    )
    with caplog.at_level("WARNING"):
        missing = await handlers.warn_missing_peering(kube, "llmgw", ["team-a", "team-b", "team-c"])
        assert missing == ["KopfPeering team-a/llmgw"]
        assert await handlers.warn_missing_peering(kube, "llmgw", []) == ["ClusterKopfPeering llmgw"]
    assert paths == [
        "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings/llmgw",
        "/apis/kopf.dev/v1/namespaces/team-b/kopfpeerings/llmgw",
        "/apis/kopf.dev/v1/namespaces/team-c/kopfpeerings/llmgw",
        "/apis/kopf.dev/v1/clusterkopfpeerings/llmgw",
    ]
    text = caplog.text
    assert "KopfPeering team-a/llmgw does not exist" in text and "stays paused" in text
    assert "cannot check that KopfPeering team-c/llmgw exists" in text
    assert "team-b/llmgw does not exist" not in text
    await kube.aclose()


async def test_a_tier_provisioned_here_counts_before_the_index_sees_its_team() -> None:
    from gateway_operator.models import GatewayTierSpec, TierView

    stale = {"coding": [{"spec": TIERS["coding"][0]["spec"], "status": {}}]}  # the team's status not seen yet
    world = World()
    put_user(world, {"email": "alice@company.com", "tier": "coding"})
    with pytest.raises(kopf.TemporaryError, match="not provisioned yet"):
        await handlers._reconcile_user(world.svc, NS, NAME, stale, {})  # type: ignore[arg-type]
    spec = GatewayTierSpec.model_validate(TIERS["coding"][0]["spec"])
    handlers._PROVISIONED_TIERS["coding"] = TierView(name="coding", spec=spec, team_ready=True)
    try:
        await handlers._reconcile_user(world.svc, NS, NAME, stale, {})  # type: ignore[arg-type]
        assert handlers._tier_view("other", stale) is None  # type: ignore[arg-type]
    finally:
        handlers._PROVISIONED_TIERS.clear()
    assert world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]["status"] == "True"


async def test_a_reconcile_waits_for_its_turn_before_it_reads_or_calls_anything() -> None:
    import asyncio

    world = World()
    put_user(world, {"email": "alice@company.com", "tier": "coding"})
    reads = count_reads(world)
    turns = world.svc.litellm.turns = asyncio.Semaphore(1)
    await turns.acquire()  # every turn taken (a burst ahead of this user)
    waiting = asyncio.create_task(run(world))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    assert reads == [] and world.litellm.writes == [] and world.litellm.reads == []
    turns.release()
    await asyncio.wait_for(waiting, 5)
    assert reads == [NAME]
    assert world.kube.statuses[(USER_PLURAL, NS, NAME)]["conditions"][0]["status"] == "True"


async def test_a_burst_beyond_the_turns_converges_every_user_with_two_admin_writes_each() -> None:
    import asyncio

    world = World()
    names = [f"user{i:02d}" for i in range(12)]
    for name in names:
        world.kube.objects[(USER_PLURAL, NS, name)] = {
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": {"email": f"{name}@company.com", "tier": "coding"},
        }
    world.svc.litellm.turns = asyncio.Semaphore(2)
    admitted = peak = 0
    real_get = world.kube.get_object

    async def slow_get(plural: str, name: str, namespace: str | None = None) -> Any:
        nonlocal admitted, peak
        admitted += 1
        peak = max(peak, admitted)
        await asyncio.sleep(0.01)
        admitted -= 1
        return await real_get(plural, name, namespace)

    world.kube.get_object = slow_get  # type: ignore[method-assign]
    # Every user twice at once (an event and the tier's propagation): serialised per user, bounded overall.
    calls = [handlers._reconcile_user(world.svc, NS, n, TIERS, {}) for n in names + names]  # type: ignore[arg-type]
    await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert peak <= 2
    assert sorted(world.litellm.writes) == sorted(["/user/new", "/key/generate"] * len(names))
    for name in names:
        assert world.kube.statuses[(USER_PLURAL, NS, name)]["conditions"][0]["status"] == "True"


async def test_kopf_logs_in_through_a_bounded_connection_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    info = kopf.ConnectionInfo(server="https://api.test:6443", token="t0ken", default_namespace="ops")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setattr(kopf, "login_with_kubeconfig", lambda **_: info)
    monkeypatch.setenv("LITELLM_ADMIN_URL", "http://litellm.test")
    monkeypatch.setenv("WATCH_NAMESPACES", "team-a,team-b")
    result = await handlers.login(settings=kopf.OperatorSettings())
    assert isinstance(result, kopf.AiohttpSession)
    session = result.aiohttp_session
    try:
        assert session.connector is not None
        assert session.connector.limit == handlers.KOPF_CONNECTIONS + 2 * handlers.WATCHES_PER_SCOPE
        assert session.headers["Authorization"] == "Bearer t0ken"
        assert (result.server, result.default_namespace) == ("https://api.test:6443", "ops")
    finally:
        await session.close()
    # Namespace patterns: an open-ended number of watch streams, so kopf's own unbounded session.
    monkeypatch.setenv("WATCH_NAMESPACES", "team-*")
    assert await handlers.login(settings=kopf.OperatorSettings()) is info
