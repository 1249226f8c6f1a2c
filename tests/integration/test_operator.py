"""The operator (a real process running kopf) against the local stack's kube-apiserver and real LiteLLM.

How: the stack's own operator is paused (SIGSTOP) for this module, and a test operator runs instead,
pointed at a counting, fault-injecting proxy in front of the real LiteLLM admin API (AdminProxy in
tests/stack/operator.py). The proxy is how calls, writes and admin calls in flight are counted, how
LiteLLM "goes down", and how the operator is killed at an exact point (a held /key/generate).
Objects live in a namespace and tiers named after this module's run, and are removed at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.stack.operator import AdminProxy, OperatorProcess, operator_env, pause_stack_operator

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"it-op-{RUN}"
SEEN_KEYS: set[str] = set()  # every key value a Secret ever held: the sentinel test looks for them


# --- helpers --------------------------------------------------------------------------------------------


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    from tests.stack.kubectl import kubectl_path

    result = subprocess.run(
        [kubectl_path(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args[:4])}: {result.stderr.strip()}")
    return result.stdout


def apply(*docs: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))


def get(kind: str, name: str, namespace: str | None = NS) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = kubectl(*args)
    return json.loads(out) if out.strip() else None


def patch(kind: str, name: str, body: dict[str, Any], namespace: str | None = NS) -> None:
    args = ["patch", kind, name, "--type=merge", "-p", json.dumps(body)]
    if namespace:
        args += ["-n", namespace]
    kubectl(*args)


def delete(kind: str, name: str, namespace: str | None = NS, wait: bool = False) -> None:
    args = ["delete", kind, name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"]
    if namespace:
        args += ["-n", namespace]
    kubectl(*args)


def tier(
    name: str, budget: float = 20, rpm: int = 50, models: tuple[str, ...] = ("model-balanced",)
) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayTier",
        "metadata": {"name": name},
        "spec": {"monthlyBudgetUSD": budget, "rpmLimit": rpm, "models": list(models)},
    }


def user(name: str, tier_name: str, namespace: str = NS, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"email": f"{name}.{RUN}@company.com", "tier": tier_name, **spec},
    }


def ready(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return dict(condition)
    return None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_ready(
    name: str, namespace: str = NS, timeout: float = 60, reason: str = "Provisioned"
) -> dict[str, Any]:
    seen: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        obj = seen[0] = get("gatewayuser", name, namespace)
        condition = ready(obj)
        if (
            obj
            and condition
            and condition["reason"] == reason
            and (obj["status"].get("observedGeneration") == obj["metadata"]["generation"])
        ):
            return obj
        return None

    try:
        return dict(wait_for(f"{namespace}/{name} Ready={reason}", check, timeout))
    except AssertionError as error:
        status = (seen[0] or {}).get("status")
        raise AssertionError(f"{error}; status: {json.dumps(status)[:1500]}") from None


def secret_value(name: str, namespace: str = NS) -> str | None:
    obj = get("secret", name, namespace)
    if not obj:
        return None
    value = base64.b64decode(obj["data"]["api-key"]).decode()
    SEEN_KEYS.add(value)
    return value


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def chat_status(gateway: str, key: str, model: str) -> int:
    """One small chat completion with ``key``: its HTTP status, -1 when the request itself failed."""
    try:
        return httpx.post(
            f"{gateway}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=30,
        ).status_code
    except httpx.HTTPError:
        return -1


class Admin:
    """Direct (un-proxied) admin calls to the real LiteLLM, to inspect and to make 'UI' changes."""

    def __init__(self, env: dict[str, str]):
        self.http = httpx.Client(
            base_url=env["LITELLM_ADMIN_URL"],
            headers={"Authorization": f"Bearer {env['LITELLM_MASTER_KEY']}"},
            timeout=30,
        )

    def keys(self, alias_prefix: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.http.get(
                "/key/list",
                params={
                    "key_alias": alias_prefix,
                    "substring_matching": "true",
                    "return_full_object": "true",
                    "size": 100,
                    "page": page,
                },
            ).json()
            found.extend(answer["keys"])
            if page >= answer["total_pages"]:
                break
            page += 1
        return [k for k in found if str(k.get("key_alias", "")).startswith(alias_prefix)]

    def key(self, alias: str) -> dict[str, Any] | None:
        found = self.keys(alias)
        exact = [k for k in found if k["key_alias"] == alias]
        return exact[0] if exact else None

    def key_info(self, token: str) -> dict[str, Any] | None:
        response = self.http.get("/key/info", params={"key": token})
        return response.json()["info"] if response.status_code == 200 else None

    def update_key(self, token: str, **fields: Any) -> None:
        self.http.post("/key/update", json={"key": token, **fields}).raise_for_status()

    def user(self, user_id: str) -> dict[str, Any] | None:
        response = self.http.get("/user/info", params={"user_id": user_id})
        return response.json()["user_info"] if response.status_code == 200 else None

    def team(self, team_id: str) -> dict[str, Any] | None:
        response = self.http.get("/team/info", params={"team_id": team_id})
        return response.json()["team_info"] if response.status_code == 200 else None


class Harness:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proxy = AdminProxy(env["LITELLM_ADMIN_URL"]).start()
        self.admin = Admin(env)
        self.overrides: dict[str, str] = {}
        self.operator = self._new_operator()

    def _new_operator(self) -> OperatorProcess:
        from tests.stack.common import free_port

        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        settings = {
            "METRICS_PORT": self.metrics_url.split(":")[2].split("/")[0],
            "LITELLM_ADMIN_URL": self.proxy.url,
            "LITELLM_MAX_CONCURRENCY": "10",
            "LITELLM_BACKOFF_SECONDS": "0.2",
            "LITELLM_RETRIES": "2",
            "RESYNC_INTERVAL_SECONDS": "3600",
            "ORPHAN_GRACE_SECONDS": "2",
            **self.overrides,
        }
        env = operator_env(self.env, 0, **settings)
        return OperatorProcess(f"operator-it-{RUN}", env)

    def restart(self, **overrides: str) -> None:
        self.operator.stop()
        self.overrides = overrides
        self.operator = self._new_operator().start()


@contextmanager
def isolated_harness(env: dict[str, str], namespace: str, run: str) -> Iterator[Harness]:
    """A test operator behind the AdminProxy while the stack's own operator is paused, and ``namespace``
    created for it. On exit: the namespace's GatewayUsers, every GatewayTier named ``*-<run>*``, the
    operator, the proxy and the namespace are removed."""
    with pause_stack_operator():
        harness = Harness(env)
        kubectl("create", "namespace", namespace)
        harness.operator.start()
        try:
            yield harness
        finally:
            users = ("gatewayusers", "--all", "-n", namespace)
            kubectl("delete", *users, "--wait=true", "--timeout=90s", check=False)
            for name in kubectl("get", "gatewaytiers", "-o", "name", check=False).split():
                if f"-{run}" in name:
                    kubectl("delete", name, "--wait=true", "--timeout=30s", check=False)
            harness.operator.stop()
            harness.proxy.stop()
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def ready_tier(name: str, **spec: Any) -> str:
    """Applies ``tier(name, **spec)`` and waits until the GatewayTier is Ready; returns its name."""
    apply(tier(name, **spec))
    wait_for(
        f"tier {name} Ready", lambda: (ready(get("gatewaytier", name, None)) or {}).get("status") == "True"
    )
    return name


def kill_at(h: Harness, path: str, when: str, trigger: Callable[[], object], timeout: float = 30) -> None:
    """Hold the next admin call to ``path``, run ``trigger``, SIGKILL the operator once the call is held
    (a held "before" call never reaches LiteLLM; "after" it did and the answer is lost)."""
    reached, release = h.proxy.hold(path, when)
    try:
        trigger()
        assert reached.wait(timeout), f"the operator never sent {path}"  # type: ignore[attr-defined]
        h.operator.kill()
    finally:
        h.proxy.unhold(path, drop=True)
        release.set()  # type: ignore[attr-defined]
    time.sleep(0.5)
    h.proxy.unhold(path)


@pytest.fixture(scope="module")
def h(stack_env: dict[str, str]) -> Iterator[Harness]:
    with isolated_harness(stack_env, NS, RUN) as harness:
        yield harness


@pytest.fixture(scope="module")
def coding(h: Harness) -> str:
    return ready_tier(f"coding-{RUN}", budget=20, rpm=50, models=("model-balanced", "model-embed"))


# --- behaviours -----------------------------------------------------------------------------------------


def test_tier_becomes_a_litellm_team(h: Harness, coding: str) -> None:
    obj = get("gatewaytier", coding, None)
    assert obj is not None and obj["status"]["teamId"] == f"llmgw-tier-{coding}"
    team = h.admin.team(f"llmgw-tier-{coding}")
    assert team is not None
    assert sorted(team["models"]) == ["model-balanced", "model-embed"]
    assert team["metadata"]["managed-by"] == "llm-gateway-operator"
    assert team.get("max_budget") is None and team.get("rpm_limit") is None


def test_user_gets_a_working_key_in_a_secret_within_seconds(h: Harness, coding: str) -> None:
    h.proxy.reset()
    started = time.monotonic()
    apply(user("alice", coding, displayName="Alice Smith"))
    wait_for("Secret", lambda: secret_value("alice-llm-key"), timeout=30, interval=0.05)
    latency = time.monotonic() - started
    obj = wait_ready("alice")
    print(f"\n[measure] apply -> Secret: {latency:.2f}s; admin calls: {h.proxy.calls}")
    assert latency < 5
    assert sum(h.proxy.calls.values()) <= 3, h.proxy.calls

    value = secret_value("alice-llm-key")
    assert value is not None and value.startswith("sk-")
    secret = get("secret", "alice-llm-key")
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["OPENAI_API_KEY"] == value
    assert data["base-url"] == data["OPENAI_BASE_URL"] == h.env["LLM_GATEWAY_URL"]
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("GatewayUser", "alice", obj["metadata"]["uid"])

    status = obj["status"]
    key = h.admin.key(f"llmgw.{NS}.alice")
    assert key is not None and key["token"] == sha(value)
    assert status["keyId"] == key["token"][:12] and value not in json.dumps(status)
    assert (status["tier"], status["maxBudgetUSD"], status["rpmLimit"], status["spendUSD"]) == (
        coding,
        20,
        50,
        0,
    )
    assert status["secretName"] == "alice-llm-key" and status["budgetResetAt"]
    assert (key["max_budget"], key["budget_duration"], key["rpm_limit"]) == (20, "1mo", 50)
    assert key["team_id"] == f"llmgw-tier-{coding}" and key["user_id"] == f"alice.{RUN}@company.com"
    assert key["allowed_routes"] == ["llm_api_routes", "/key/info", "/user/info"]
    assert key["metadata"]["uid"] == obj["metadata"]["uid"] and "Alice" not in json.dumps(key["metadata"])
    row = h.admin.user(f"alice.{RUN}@company.com")
    assert row is not None and row["max_budget"] == 20 and row["user_alias"] == "Alice Smith"

    # The key itself works against the gateway, and only on the allowed routes.
    own = httpx.get(f"{h.env['LITELLM_ADMIN_URL']}/key/info", headers={"Authorization": f"Bearer {value}"})
    assert own.status_code == 200 and own.json()["info"]["key_alias"] == f"llmgw.{NS}.alice"
    team = httpx.get(
        f"{h.env['LITELLM_ADMIN_URL']}/team/info",
        params={"team_id": key["team_id"]},
        headers={"Authorization": f"Bearer {value}"},
    )
    assert team.status_code in (401, 403), "a user key must not read its teammates via /team/info"


def test_rerun_on_unchanged_objects_makes_no_litellm_writes(h: Harness, coding: str) -> None:
    wait_ready("alice")
    h.proxy.reset()
    h.restart()  # on.resume reconciles every object again
    patch("gatewayuser", "alice", {"metadata": {"annotations": {"touched": RUN}}})  # on.update, same spec
    time.sleep(3)
    wait_ready("alice")
    assert h.proxy.writes() == {}, h.proxy.calls
    assert h.proxy.count("GET /user/info") >= 1 and h.proxy.count("GET /key/list?key_alias") >= 1


def test_tier_change_and_override_update_the_same_key_keeping_spend(h: Harness, coding: str) -> None:
    architect = f"architect-{RUN}"
    apply(tier(architect, budget=500, rpm=100, models=("model-reasoning", "model-reasoning-opus")))
    apply(user("bob", coding))
    wait_ready("bob")
    value = secret_value("bob-llm-key")
    assert value is not None
    h.admin.update_key(sha(value), spend=1.5)
    patch("gatewayuser", "bob", {"spec": {"tier": architect, "monthlyBudgetUSD": 42, "rpmLimit": 7}})
    wait_for(
        "bob on the new tier",
        lambda: (get("gatewayuser", "bob") or {}).get("status", {}).get("tier") == architect,
    )
    obj = wait_ready("bob")
    key = h.admin.key(f"llmgw.{NS}.bob")
    assert key is not None and key["token"] == sha(value) and secret_value("bob-llm-key") == value
    assert (key["team_id"], key["max_budget"], key["rpm_limit"]) == (f"llmgw-tier-{architect}", 42, 7)
    assert sorted(key["models"]) == ["model-reasoning", "model-reasoning-opus"] and key["spend"] == 1.5
    assert (obj["status"]["maxBudgetUSD"], obj["status"]["spendUSD"]) == (42, 1.5)


def test_tier_edit_propagates_to_all_its_users(h: Harness) -> None:
    name = f"edit-{RUN}"
    apply(tier(name, budget=5, rpm=10, models=("model-cheap",)))
    apply(*(user(f"p{i}", name) for i in range(3)))
    for i in range(3):
        wait_ready(f"p{i}")
    patch("gatewaytier", name, {"spec": {"rpmLimit": 33, "models": ["model-cheap", "model-embed"]}}, None)

    def propagated() -> bool:
        keys = [h.admin.key(f"llmgw.{NS}.p{i}") for i in range(3)]
        return all(
            k and k["rpm_limit"] == 33 and sorted(k["models"]) == ["model-cheap", "model-embed"] for k in keys
        )

    wait_for("tier edit on every key", propagated, timeout=30, interval=0.5)
    assert wait_ready("p1")["status"]["rpmLimit"] == 33
    # The count is debounced (one tier status patch per burst of user reconciles), hence a wait.
    wait_for(
        "tier status counts its 3 users",
        lambda: (get("gatewaytier", name, None) or {}).get("status", {}).get("users") == 3,
        timeout=10,
    )


def test_suspend_blocks_and_unsuspend_unblocks(h: Harness, coding: str) -> None:
    apply(user("carol", coding))
    wait_ready("carol")
    value = secret_value("carol-llm-key")
    assert value is not None
    patch("gatewayuser", "carol", {"spec": {"suspended": True}})
    wait_ready("carol", reason="Suspended")
    assert (h.admin.key_info(sha(value)) or {}).get("blocked") is True
    blocked = httpx.get(
        f"{h.env['LITELLM_ADMIN_URL']}/key/info", headers={"Authorization": f"Bearer {value}"}
    )
    assert blocked.status_code == 401
    patch("gatewayuser", "carol", {"spec": {"suspended": False}})
    wait_ready("carol")
    assert (h.admin.key_info(sha(value)) or {}).get("blocked") in (False, None)


def test_secret_deleted_by_hand_gets_a_new_key_and_the_old_one_is_revoked(h: Harness, coding: str) -> None:
    apply(user("dave", coding))
    wait_ready("dave")
    old = secret_value("dave-llm-key")
    assert old is not None
    h.admin.update_key(sha(old), spend=0.75)
    delete("secret", "dave-llm-key")
    new = wait_for("a new Secret", lambda: (v := secret_value("dave-llm-key")) and v != old and v, timeout=30)
    obj = wait_for(
        "status on the new key",
        lambda: (o := get("gatewayuser", "dave")) and o["status"].get("keyId") == sha(new)[:12] and o,
    )
    keys = h.admin.keys(f"llmgw.{NS}.dave")
    assert [k["token"] for k in keys] == [sha(new)], "exactly one key, the new one"
    assert keys[0]["spend"] == 0.75, "spend carried over"
    assert (h.admin.key_info(sha(old)) or {}).get("status", "deleted") == "deleted"
    revoked = httpx.get(f"{h.env['LITELLM_ADMIN_URL']}/key/info", headers={"Authorization": f"Bearer {old}"})
    assert revoked.status_code == 401
    assert obj["status"]["spendUSD"] == 0.75


def test_foreign_secret_is_never_overwritten(h: Harness, coding: str) -> None:
    kubectl("create", "secret", "generic", "erin-llm-key", "-n", NS, "--from-literal=api-key=not-ours")
    apply(user("erin", coding))
    obj = wait_ready("erin", reason="SecretConflict")
    assert "erin-llm-key" in (ready(obj) or {})["message"]
    assert base64.b64decode((get("secret", "erin-llm-key") or {})["data"]["api-key"]).decode() == "not-ours"
    assert h.admin.key(f"llmgw.{NS}.erin") is None
    patch("gatewayuser", "erin", {"spec": {"secretName": "erin-gateway"}})
    wait_ready("erin")
    assert secret_value("erin-gateway")


def test_one_email_one_litellm_user(h: Harness, coding: str) -> None:
    apply(user("olga", coding))
    wait_ready("olga")
    h.proxy.reset()
    apply(user("olga-again", coding, email=f"olga.{RUN}@company.com"))
    obj = wait_ready("olga-again", reason="EmailConflict")
    assert f"{NS}/olga" in (ready(obj) or {})["message"]
    assert h.proxy.calls == {}, "a conflicting user makes no LiteLLM calls"
    delete("gatewayuser", "olga")
    wait_ready("olga-again", timeout=60)  # the remaining holder of the email takes over
    assert h.admin.user(f"olga.{RUN}@company.com") is not None


def test_missing_tier_then_created(h: Harness) -> None:
    late = f"late-{RUN}"
    apply(user("frank", late))
    wait_ready("frank", reason="TierNotFound")
    apply(tier(late, budget=3, rpm=5, models=("model-cheap",)))
    obj = wait_ready("frank")
    assert obj["status"]["maxBudgetUSD"] == 3


def test_tier_deletion_waits_for_its_users(h: Harness) -> None:
    doomed = f"doomed-{RUN}"
    apply(tier(doomed, budget=1, rpm=1, models=("model-cheap",)))
    apply(user("gina", doomed))
    wait_ready("gina")
    delete("gatewaytier", doomed, None)
    blocked = wait_for(
        "InUse", lambda: (c := ready(get("gatewaytier", doomed, None))) and c["reason"] == "InUse" and c
    )
    assert f"{NS}/gina" in blocked["message"]
    assert h.admin.team(f"llmgw-tier-{doomed}") is not None
    delete("gatewayuser", "gina")
    wait_for("tier gone", lambda: get("gatewaytier", doomed, None) is None, timeout=90, interval=0.5)
    assert h.admin.team(f"llmgw-tier-{doomed}") is None


def test_user_deletion_removes_key_user_and_secret(h: Harness, coding: str) -> None:
    apply(user("hank", coding))
    wait_ready("hank")
    value = secret_value("hank-llm-key")
    assert value is not None
    delete("gatewayuser", "hank")
    wait_for("user gone", lambda: get("gatewayuser", "hank") is None, timeout=30)
    assert h.admin.key(f"llmgw.{NS}.hank") is None
    assert h.admin.user(f"hank.{RUN}@company.com") is None
    wait_for("secret gone", lambda: get("secret", "hank-llm-key") is None, timeout=30)


def test_delete_while_litellm_is_down_completes_once_it_returns(h: Harness, coding: str) -> None:
    apply(user("ivan", coding))
    wait_ready("ivan")
    h.proxy.down = True
    try:
        delete("gatewayuser", "ivan")
        time.sleep(4)
        obj = get("gatewayuser", "ivan")
        assert obj is not None and obj["metadata"].get("deletionTimestamp"), "finalizer must hold the object"
        assert h.admin.key(f"llmgw.{NS}.ivan") is not None
    finally:
        h.proxy.down = False
    wait_for("user gone", lambda: get("gatewayuser", "ivan") is None, timeout=90, interval=0.5)
    assert h.admin.key(f"llmgw.{NS}.ivan") is None


def test_backend_outage_is_reported_and_recovers(h: Harness, coding: str) -> None:
    h.proxy.down = True
    try:
        apply(user("judy", coding))
        wait_ready("judy", reason="BackendUnavailable", timeout=30)
    finally:
        h.proxy.down = False
    wait_ready("judy", timeout=90)


@pytest.mark.parametrize("when", ["before", "after"])
def test_operator_killed_around_key_registration_converges_to_one_key(
    h: Harness, coding: str, when: str
) -> None:
    name = f"kill-{when}"
    reached, release = h.proxy.hold("/key/generate", when)
    try:
        apply(user(name, coding))
        assert reached.wait(30), "the operator never registered the key"  # type: ignore[attr-defined]
        value = secret_value(f"{name}-llm-key")
        assert value is not None, "the Secret is written before LiteLLM learns the key"
        h.operator.kill()
    finally:
        h.proxy.unhold("/key/generate", drop=True)
        release.set()  # type: ignore[attr-defined]
    time.sleep(0.5)
    h.proxy.unhold("/key/generate")
    h.restart()
    wait_ready(name, timeout=60)
    keys = h.admin.keys(f"llmgw.{NS}.{name}")
    assert len(keys) == 1 and keys[0]["token"] == sha(value), "exactly one key, the one in the Secret"
    assert secret_value(f"{name}-llm-key") == value


@pytest.fixture
def fast_resync(h: Harness) -> Iterator[None]:
    h.restart(RESYNC_INTERVAL_SECONDS="3")
    yield
    h.restart()


@pytest.mark.usefixtures("fast_resync")
def test_drift_in_litellm_is_repaired_and_spend_flows_back(h: Harness, coding: str) -> None:
    apply(user("kate", coding), user("liam", coding))
    wait_ready("kate")
    wait_ready("liam")
    kate = h.admin.key(f"llmgw.{NS}.kate")
    assert kate is not None
    h.admin.update_key(kate["token"], max_budget=9999, models=["model-reasoning-opus"], spend=20)
    liam_value = secret_value("liam-llm-key")
    assert liam_value is not None
    h.admin.http.post("/key/delete", json={"keys": [sha(liam_value)]}).raise_for_status()

    def repaired() -> bool:
        key = h.admin.key(f"llmgw.{NS}.kate")
        return bool(
            key and key["max_budget"] == 20 and sorted(key["models"]) == ["model-balanced", "model-embed"]
        )

    wait_for("kate repaired", repaired, timeout=30, interval=0.5)
    obj = wait_ready("kate", reason="BudgetExceeded", timeout=30)
    assert obj["status"]["spendUSD"] == 20
    new_liam = wait_for(
        "liam re-keyed", lambda: (v := secret_value("liam-llm-key")) != liam_value and v, timeout=30
    )
    wait_for(
        "liam's new key registered",
        lambda: (h.admin.key(f"llmgw.{NS}.liam") or {}).get("token") == sha(new_liam),
        timeout=30,
    )
    assert len(h.admin.keys(f"llmgw.{NS}.liam")) == 1

    # Converged: a resync costs one /team/info call per tier and writes nothing.
    wait_ready("liam")
    time.sleep(1)
    h.proxy.reset()
    time.sleep(7)  # two resync intervals
    tiers = len(kubectl("get", "gatewaytiers", "-o", "name").split())
    print(f"\n[measure] no-op resync, {tiers} tiers, 2 intervals: {h.proxy.calls}")
    assert h.proxy.writes() == {}, h.proxy.calls
    assert set(h.proxy.calls) <= {"GET /team/info?team_id"}, h.proxy.calls
    assert h.proxy.count("GET /team/info?team_id") <= tiers * 3


def test_two_hundred_users_at_once_with_bounded_admin_concurrency(h: Harness) -> None:
    bulk = f"bulk-{RUN}"
    namespace = f"{NS}-bulk"
    kubectl("create", "namespace", namespace)
    try:
        apply(tier(bulk, budget=1, rpm=5, models=("model-cheap",)))
        wait_for("tier", lambda: (ready(get("gatewaytier", bulk, None)) or {}).get("status") == "True")
        h.proxy.reset()
        started = time.monotonic()
        apply(*(user(f"u{i:03d}", bulk, namespace=namespace) for i in range(200)))

        def all_ready() -> bool:
            items = json.loads(kubectl("get", "gatewayusers", "-n", namespace, "-o", "json"))["items"]
            done = [i for i in items if (ready(i) or {}).get("status") == "True"]
            return len(done) == 200

        wait_for("200 users Ready", all_ready, timeout=300, interval=1)
        elapsed = time.monotonic() - started
        calls = sum(h.proxy.calls.values())
        print(
            f"\n[measure] 200 users Ready in {elapsed:.1f}s; {calls} admin calls "
            f"({calls / 200:.2f}/user); max in flight {h.proxy.max_in_flight}; {h.proxy.calls}"
        )
        assert h.proxy.max_in_flight <= 10
        assert calls <= 200 * 3
        keys = h.admin.keys(f"llmgw.{namespace}.")
        assert len(keys) == 200 and len({k["token"] for k in keys}) == 200
    finally:
        kubectl(
            "delete",
            "gatewayusers",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=300s",
            check=False,
            timeout=330,
        )
        kubectl("delete", "gatewaytier", bulk, "--wait=false", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_chaos_flaky_backend_and_operator_kills_converge_to_one_key_each(h: Harness, coding: str) -> None:
    """25% of admin calls fail with 5xx (half of them after LiteLLM did the work) and the operator is
    SIGKILLed twice mid-way: every user still ends with exactly one key, the one in its Secret."""
    namespace = f"{NS}-chaos"
    kubectl("create", "namespace", namespace)
    names = [f"c{i:02d}" for i in range(30)]
    try:
        h.proxy.flaky = 0.25
        apply(*(user(n, coding, namespace=namespace) for n in names))
        for _ in range(2):
            time.sleep(2.5)
            h.operator.kill()
            h.restart()
        h.proxy.flaky = 0.0

        def all_ready() -> bool:
            items = json.loads(kubectl("get", "gatewayusers", "-n", namespace, "-o", "json"))["items"]
            return sum(1 for i in items if (ready(i) or {}).get("reason") == "Provisioned") == len(names)

        wait_for("chaos users Ready", all_ready, timeout=240, interval=1)
        keys = h.admin.keys(f"llmgw.{namespace}.")
        by_alias: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            by_alias.setdefault(key["key_alias"], []).append(key)
        live = {a: k for a, k in by_alias.items() if not a.endswith(":retired")}
        assert sorted(live) == sorted(f"llmgw.{namespace}.{n}" for n in names)
        for n in names:
            [key] = live[f"llmgw.{namespace}.{n}"]
            value = secret_value(f"{n}-llm-key", namespace)
            assert value is not None and key["token"] == sha(value), n
        retired = [a for a in by_alias if a.endswith(":retired")]
        assert all(k.get("blocked") for a in retired for k in by_alias[a]), (
            "leftover retired keys are blocked"
        )
    finally:
        h.proxy.flaky = 0.0
        kubectl(
            "delete",
            "gatewayusers",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=300s",
            check=False,
            timeout=330,
        )
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- budgets you can trust, and metrics ----------------------------------------------------------------


def events_of(name: str, namespace: str = NS) -> list[dict[str, Any]]:
    out = kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def reasons_of(name: str) -> list[str]:
    return [e["reason"] for e in events_of(name) for _ in range(int(e.get("count") or 1))]


@pytest.mark.usefixtures("fast_resync")
def test_budget_thresholds_alert_once_and_a_missed_reset_is_repaired(h: Harness, coding: str) -> None:
    import psycopg

    apply(user("budget-nora", coding))
    wait_ready("budget-nora")
    key = h.admin.key(f"llmgw.{NS}.budget-nora")
    assert key is not None
    h.admin.update_key(key["token"], spend=17.0)  # 85% of the tier's 20 USD
    obj = wait_for(
        "budgetAlert 80",
        lambda: (
            (o := get("gatewayuser", "budget-nora"))
            and (o["status"].get("budgetAlert") or {}).get("level") == 80
            and o
        ),
        timeout=30,
    )
    warning = [c for c in obj["status"]["conditions"] if c["type"] == "BudgetWarning"]
    assert warning and (warning[0]["status"], warning[0]["reason"]) == ("True", "Budget80")
    wait_for("Budget80 event", lambda: "Budget80" in reasons_of("budget-nora"), timeout=15)
    time.sleep(7)  # two more resyncs: the threshold is not announced again
    assert reasons_of("budget-nora").count("Budget80") == 1, reasons_of("budget-nora")

    # LiteLLM's reset job "missed" the period end: move budget_reset_at two hours into the past.
    with psycopg.connect(h.env["DATABASE_URL"], autocommit=True) as conn:
        updated = conn.execute(
            "UPDATE \"LiteLLM_VerificationToken\" SET budget_reset_at = now() - interval '2 hours' "
            "WHERE token = %s",
            (key["token"],),
        ).rowcount
    assert updated == 1
    wait_for("BudgetResetMissed event", lambda: "BudgetResetMissed" in reasons_of("budget-nora"), timeout=30)
    repaired = h.admin.key_info(key["token"])
    assert repaired is not None and repaired["spend"] == 0 and repaired["budget_duration"] == "1mo"
    reset_at = datetime.fromisoformat(str(repaired["budget_reset_at"]).replace("Z", "+00:00"))
    if reset_at.tzinfo is None:
        reset_at = reset_at.replace(tzinfo=UTC)
    assert reset_at > datetime.now(UTC) and reset_at.day == 1, repaired["budget_reset_at"]
    obj = wait_for(
        "status after the repair",
        lambda: (o := get("gatewayuser", "budget-nora")) and o["status"].get("spendUSD") == 0 and o,
        timeout=15,
    )
    assert obj["status"]["budgetAlert"]["level"] == 0
    warning = [c for c in obj["status"]["conditions"] if c["type"] == "BudgetWarning"]
    assert warning[0]["status"] == "False"
    assert reasons_of("budget-nora").count("BudgetResetMissed") == 1
    # Tier status carries the spend of its users and of the whole gateway.
    tier_obj = wait_for(
        "tier spend",
        lambda: (t := get("gatewaytier", coding, None)) and "spendUSD" in t["status"] and t,
        timeout=15,
    )
    assert tier_obj["status"]["gatewaySpendUSD"] >= tier_obj["status"]["spendUSD"] >= 0
    assert tier_obj["status"]["budgetUSD"] >= 20


def test_metrics_endpoint_serves_the_operator_metrics(h: Harness, coding: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    apply(user("metrics-mia", coding))
    wait_ready("metrics-mia")

    def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
        text = httpx.get(h.metrics_url, timeout=5).text
        assert "sk-" not in text and h.env["LITELLM_MASTER_KEY"] not in text
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
        return found

    def users_ready() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        found = samples()
        wanted = {"tier": coding, "ready": "True", "reason": "Provisioned"}
        return (
            found
            if any(labels == wanted and value >= 1 for labels, value in found.get("llmgw_users", []))
            else None
        )

    found = wait_for("users gauge", users_ready, timeout=20)
    assert any(
        labels.get("kind") == "GatewayUser" and value >= 1
        for labels, value in found["llmgw_reconcile_duration_seconds_count"]
    )
    assert any(
        labels == {"method": "POST", "endpoint": "/key/generate"} and value >= 1
        for labels, value in found["llmgw_litellm_requests_total"]
    )
    body = httpx.get(h.metrics_url, timeout=5).text
    for name in ("llmgw_litellm_errors_total", "llmgw_tier_spend_usd", "llmgw_budget_alerts_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name
    assert "llmgw_budget_resets_repaired_total" in found


def test_sentinel_no_key_value_in_status_events_or_logs(h: Harness) -> None:
    """Runs last in this module: every key value any test saw must appear nowhere but in Secrets."""
    assert len(SEEN_KEYS) >= 5
    statuses = kubectl("get", "gatewayusers,gatewaytiers", "-A", "-o", "json")
    events = kubectl("get", "events", "-A", "-o", "json")
    logs = "".join(
        p.read_text(errors="replace") for p in h.operator.log_path.parent.glob(f"operator-it-{RUN}*.log")
    )
    for value in SEEN_KEYS:
        assert value not in statuses
        assert value not in events
        assert value not in logs
    assert h.env["LITELLM_MASTER_KEY"] not in logs + events + statuses
    assert "KeyCreated" in events, "the operator does post Events (so the check above is meaningful)"
