"""Fault and load scenarios on the local stack, beyond tests/integration/test_operator.py (which already
covers LiteLLM down and back, SIGKILL around key registration, a Secret deleted by hand, a CR deleted while
LiteLLM is down and a flaky-backend chaos run). Same machinery, imported: the stack's operator is paused
and a test operator runs behind the counting, fault-injecting AdminProxy.

Every scenario ends with the same invariants: exactly one live key per user (by alias), the Secret's
api-key hashing to that key's token, and no key value in operator logs, Events or status.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import test_operator as it
from tests.integration.test_operator import SEEN_KEYS, Harness, apply, kubectl, sha, wait_for
from tests.stack.common import StackContext, load_pids, pid_alive
from tests.stack.operator import OperatorProcess, operator_env

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"resil-{RUN}"
HERE = Path(__file__).parent
LOGS: list[Path] = []  # every operator log this module produced (the sentinel scans them)


# The integration module's helpers default to its own namespace: these default to ours.
def get(kind: str, name: str, namespace: str | None = NS) -> dict[str, Any] | None:
    return it.get(kind, name, namespace)


def patch(kind: str, name: str, body: dict[str, Any], namespace: str | None = NS) -> None:
    it.patch(kind, name, body, namespace)


def delete(kind: str, name: str, namespace: str | None = NS) -> None:
    it.delete(kind, name, namespace)


def wait_ready(
    name: str, namespace: str = NS, timeout: float = 60, reason: str = "Provisioned"
) -> dict[str, Any]:
    return it.wait_ready(name, namespace, timeout, reason)


def secret_value(name: str, namespace: str = NS) -> str | None:
    return it.secret_value(name, namespace)


def user(name: str, tier_name: str, **spec: Any) -> dict[str, Any]:
    return it.user(name, tier_name, namespace=NS, **spec)


def provisioned(name: str, tier_name: str, timeout: float = 60) -> str:
    """Applies the GatewayUser, waits until it is Ready and returns the key in its Secret."""
    apply(user(name, tier_name))
    wait_ready(name, timeout=timeout)
    value = secret_value(f"{name}-llm-key", NS)
    assert value is not None
    return value


# --- invariants ------------------------------------------------------------------------------------------


def live_keys(h: Harness, name: str, namespace: str = NS) -> list[dict[str, Any]]:
    alias = f"llmgw.{namespace}.{name}"
    return [k for k in h.admin.keys(alias) if k["key_alias"] in (alias, f"{alias}:retired")]


def assert_one_key_matching_secret(h: Harness, name: str, namespace: str = NS) -> dict[str, Any]:
    alias = f"llmgw.{namespace}.{name}"
    keys = live_keys(h, name, namespace)
    assert [k["key_alias"] for k in keys] == [alias], f"{name}: exactly one key, no retired leftover"
    value = secret_value(f"{name}-llm-key", namespace)
    assert value is not None and keys[0]["token"] == sha(value), f"{name}: Secret and LiteLLM disagree"
    return keys[0]


def assert_no_key_material(h: Harness) -> None:
    statuses = kubectl("get", "gatewayusers,gatewaytiers", "-A", "-o", "json")
    events = kubectl("get", "events", "-A", "-o", "json")
    logs = "".join(p.read_text(errors="replace") for p in {*LOGS, h.operator.log_path} if p.exists())
    assert logs, "no operator log to scan"
    for value in SEEN_KEYS:
        assert value not in statuses, "a key value in a CR status"
        assert value not in events, "a key value in an Event"
        assert value not in logs, "a key value in an operator log"
    assert h.env["LITELLM_MASTER_KEY"] not in logs + events + statuses


def converged(h: Harness, *names: str, namespace: str = NS) -> None:
    for name in names:
        wait_ready(name, namespace, timeout=60)
        assert_one_key_matching_secret(h, name, namespace)
    assert_no_key_material(h)


def chat(base_url: str, key: str, model: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        timeout=timeout,
    )


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h(stack_env: dict[str, str]) -> Iterator[Harness]:
    with it.isolated_harness(stack_env, NS, RUN) as harness:
        LOGS.append(harness.operator.log_path)
        yield harness


@pytest.fixture(scope="module")
def basic(h: Harness) -> str:
    return it.ready_tier(f"rbasic-{RUN}", budget=20, rpm=1000, models=("model-balanced", "model-cheap"))


@pytest.fixture(scope="module")
def other(h: Harness) -> str:
    return it.ready_tier(f"rother-{RUN}", budget=50, rpm=100, models=("model-reasoning",))


# --- 3. malformed CRs: rejected by the API server, zero LiteLLM calls -----------------------------------


def _gw_user(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def _gw_tier(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayTier",
        "metadata": {"name": name},
        "spec": spec,
    }


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("bad email", _gw_user("m-email", email="not-an-email", tier="x"), "spec.email"),
    ("missing tier", _gw_user("m-notier", email="a@company.com"), "spec.tier"),
    ("rpm 0", _gw_user("m-rpm", email="b@company.com", tier="x", rpmLimit=0), "spec.rpmLimit"),
    (
        "negative budget",
        _gw_user("m-budget", email="c@company.com", tier="x", monthlyBudgetUSD=-1),
        "spec.monthlyBudgetUSD",
    ),
    (
        "bad secret name",
        _gw_user("m-secret", email="d@company.com", tier="x", secretName="Bad_Name"),
        "spec.secretName",
    ),
    (
        "rpm as string",
        _gw_user("m-rpmstr", email="e@company.com", tier="x", rpmLimit="fast"),
        "spec.rpmLimit",
    ),
    ("no models", _gw_tier("m-nomodels", monthlyBudgetUSD=1, rpmLimit=1, models=[]), "spec.models"),
    (
        "tpm < rpm",
        _gw_tier("m-tpm", monthlyBudgetUSD=1, rpmLimit=10, tpmLimit=5, models=["model-cheap"]),
        "spec.tpmLimit",
    ),
    ("missing budget", _gw_tier("m-nobudget", rpmLimit=1, models=["model-cheap"]), "spec.monthlyBudgetUSD"),
    (
        "tier name too long",
        _gw_tier("t" * 51, monthlyBudgetUSD=1, rpmLimit=1, models=["model-cheap"]),
        "metadata.name",
    ),
]


def test_malformed_crs_are_rejected_with_the_field_named_and_cause_no_litellm_calls(
    h: Harness, basic: str
) -> None:
    apply(user("r-immutable", basic))
    wait_ready("r-immutable")
    time.sleep(1)
    h.proxy.reset()
    for label, doc, field in MALFORMED:
        result = subprocess.run(
            [_kubectl_path(), "apply", "-f", "-"],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert result.returncode != 0, f"{label}: accepted"
        assert field in result.stderr, f"{label}: {field} not named in: {result.stderr.strip()}"
        kind = doc["kind"].lower()
        namespace = doc["metadata"].get("namespace")
        assert get(kind, doc["metadata"]["name"], namespace) is None, f"{label}: object exists"
    # An update that breaks a rule (email is immutable) is refused the same way.
    changed = subprocess.run(
        [
            _kubectl_path(),
            "patch",
            "gatewayuser",
            "r-immutable",
            "-n",
            NS,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"email": "someone.else@company.com"}}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert changed.returncode != 0 and "spec.email" in changed.stderr, changed.stderr
    time.sleep(3)  # anything the operator would do about them would have happened by now
    print(f"\n[measure] {len(MALFORMED) + 1} malformed manifests; admin calls: {h.proxy.calls}")
    assert h.proxy.calls == {}, "malformed CRs must cause zero LiteLLM calls"
    converged(h, "r-immutable")


def _kubectl_path() -> str:
    from tests.stack.kubectl import kubectl_path

    return str(kubectl_path())


# --- 2. SIGKILL during update and during delete ----------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
def test_operator_killed_during_tier_change_applies_it_once_on_the_same_key(
    h: Harness, basic: str, other: str, when: str
) -> None:
    name = f"r-upd-{when}"
    value = provisioned(name, basic)
    h.admin.update_key(sha(value), spend=1.25)
    it.kill_at(h, "/key/update", when, lambda: patch("gatewayuser", name, {"spec": {"tier": other}}))
    # A move to another team is two /key/update calls (drop models and user, then move with both set
    # again; see services/users.py). Held "after", the first one landed: the key is mid-move.
    key = h.admin.key(f"llmgw.{NS}.{name}")
    assert key is not None and key["team_id"] == f"llmgw-tier-{basic}", "the move itself never landed"
    assert (key["models"] == [] and key["user_id"] is None) == (when == "after"), key["models"]
    h.proxy.reset()
    h.restart()
    wait_for(
        f"{name} on the new tier",
        lambda: (get("gatewayuser", name) or {}).get("status", {}).get("tier") == other,
        timeout=60,
    )
    obj = wait_ready(name)
    key = assert_one_key_matching_secret(h, name)
    assert secret_value(f"{name}-llm-key", NS) == value, "same key after the kill"
    assert (key["team_id"], key["max_budget"], key["rpm_limit"]) == (f"llmgw-tier-{other}", 50, 100)
    assert key["models"] == ["model-reasoning"] and key["spend"] == 1.25, "spend kept"
    assert key["user_id"] == (get("gatewayuser", name) or {})["spec"]["email"], "the key's user is back"
    assert obj["status"]["spendUSD"] == 1.25
    updates = h.proxy.count("POST /key/update")
    print(f"\n[measure] kill {when} /key/update; after restart: {h.proxy.calls}")
    assert h.proxy.count("POST /key/generate") == 0 and h.proxy.count("POST /key/delete") == 0
    assert updates <= 2, "the move is applied once (at most its two steps again), not retried in a loop"
    converged(h, name)


@pytest.mark.parametrize(
    ("path", "when"), [("/key/delete", "before"), ("/user/delete", "before"), ("/user/delete", "after")]
)
def test_operator_killed_during_delete_finishes_the_deletion_without_orphans(
    h: Harness, basic: str, path: str, when: str
) -> None:
    name = f"r-del-{path.split('/')[1]}-{when}"
    value = provisioned(name, basic)
    email = (get("gatewayuser", name) or {})["spec"]["email"]
    it.kill_at(h, path, when, lambda: delete("gatewayuser", name))
    held = get("gatewayuser", name)
    assert held is not None and held["metadata"].get("deletionTimestamp"), "the finalizer holds the CR"
    h.restart()
    wait_for(f"{name} gone", lambda: get("gatewayuser", name) is None, timeout=60, interval=0.3)
    assert live_keys(h, name) == [], "no key (live or retired) left"
    assert (h.admin.key_info(sha(value)) or {}).get("status", "deleted") == "deleted"
    assert h.admin.user(email) is None, "LiteLLM user gone"
    wait_for("Secret gone", lambda: get("secret", f"{name}-llm-key") is None, timeout=30)
    revoked = chat(h.env["LLM_GATEWAY_URL"], value, "model-cheap")
    assert revoked.status_code in (401, 403), revoked.status_code
    assert_no_key_material(h)


# --- 4. a burst near an exhausted budget -----------------------------------------------------------------


BURST = 20


def test_burst_near_exhausted_budget_overshoot_is_bounded(h: Harness) -> None:
    budget = 0.01
    burst_tier = it.ready_tier(f"rburst-{RUN}", budget=budget, rpm=10000, models=("model-cheap",))
    value = provisioned("r-burst", burst_tier)
    token = sha(value)
    gateway = h.env["LLM_GATEWAY_URL"]

    # The cost of one request, as LiteLLM books it (spend is written to the DB asynchronously).
    assert chat(gateway, value, "model-cheap").status_code == 200
    cost = wait_for(
        "the first request's spend",
        lambda: (h.admin.key_info(token) or {}).get("spend"),
        timeout=60,
        interval=0.5,
    )
    # One request away from the cap: the first of the burst legitimately crosses it.
    start_spend = budget - cost / 2
    h.admin.update_key(token, spend=start_spend)
    time.sleep(1)

    with ThreadPoolExecutor(BURST) as pool:
        codes = list(pool.map(lambda _: chat(gateway, value, "model-cheap").status_code, range(BURST)))
    ok = codes.count(200)
    after = [chat(gateway, value, "model-cheap").status_code for _ in range(3)]

    def settled() -> float | None:
        spend = float((h.admin.key_info(token) or {}).get("spend") or 0)
        expected = start_spend + cost * (ok + after.count(200))
        return spend if spend >= expected - cost / 10 else None

    final = float(wait_for("burst spend booked", settled, timeout=60, interval=1))
    over_requests = ok - 1 + after.count(200)
    over_dollars = final - budget
    print(
        f"\n[measure] burst of {BURST} at spend {start_spend:.6f}/{budget} (cost/request {cost:.6f}): "
        f"{ok} succeeded ({over_requests} beyond the crossing one), codes {sorted(set(codes))}; "
        f"sequential after: {after}; final spend {final:.6f}, overshoot ${over_dollars:.6f} "
        f"({over_dollars / budget:.0%} of the budget)"
    )
    assert ok >= 1, "the request that crosses the cap is allowed"
    assert set(codes) <= {200, 402}, codes
    assert over_requests <= BURST, "overshoot bounded by the burst size"
    assert over_dollars <= BURST * cost * 1.01
    assert after[-1] == 402, "once spend is booked the key is refused with 402"
    converged_key = assert_one_key_matching_secret(h, "r-burst")
    assert converged_key["max_budget"] == budget
    assert_no_key_material(h)


# --- 1. Postgres restarted under traffic -----------------------------------------------------------------


def _restart_postgres(down_seconds: float) -> tuple[float, float]:
    """Fast-stop the stack's Postgres and start it again on the same data folder and port (as the stack
    does, recorded in .stack/pids.json). Returns (monotonic time it went down, time it was back up)."""
    from tests.stack import postgres as pg

    [entry] = [e for e in load_pids() if e["name"] == "postgres"]
    pid = int(str(entry["pid"]))
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    port = argv[argv.index("-p") + 1]
    os.kill(pid, signal.SIGINT)  # fast shutdown: what a failover or a DB restart looks like
    wait_for("postgres down", lambda: not pid_alive(pid), timeout=30, interval=0.1)
    went_down = time.monotonic()
    time.sleep(down_seconds)
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    StackContext().spawn("postgres", pg._as_user(pg._system_user(), argv), env=env)
    isready = str(pg.bin_dir() / "pg_isready")
    wait_for(
        "postgres back",
        lambda: subprocess.run([isready, "-q", "-h", "127.0.0.1", "-p", port], timeout=5).returncode == 0,
        timeout=60,
        interval=0.2,
    )
    return went_down, time.monotonic()


def test_postgres_restart_under_traffic_recovers_without_restarting_litellm(h: Harness, basic: str) -> None:
    value = provisioned("r-pg", basic)
    gateway = h.env["LLM_GATEWAY_URL"]
    litellm_pids = [int(str(e["pid"])) for e in load_pids() if e["name"] == "litellm"]

    results: list[tuple[float, int]] = []  # (end, status)
    latencies: list[tuple[float, float]] = []  # (start, end)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            begun = time.monotonic()
            try:
                code = chat(gateway, value, "model-cheap", timeout=20).status_code
            except httpx.HTTPError:
                code = -1
            results.append((time.monotonic(), code))
            latencies.append((begun, time.monotonic()))
            time.sleep(0.1)

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    try:
        wait_for("traffic flowing", lambda: sum(1 for _, c in results if c == 200) >= 5, timeout=30)
        went_down, back_up = _restart_postgres(
            down_seconds=float(os.environ.get("RESIL_PG_DOWN_SECONDS", "3"))
        )

        def recovered() -> bool:
            tail = [c for t, c in results if t > back_up][-5:]
            return len(tail) == 5 and all(c == 200 for c in tail)

        wait_for("chat completions succeed again", recovered, timeout=90, interval=0.5)
    finally:
        stop.set()
        client.join(30)
    failures = [(t, c) for t, c in results if c != 200]
    after_up = [(t, c) for t, c in results if t > back_up]
    last_failure = max((t for t, c in after_up if c != 200), default=back_up)
    recovery = max(0.0, last_failure - back_up)
    overlapping = [end - begin for begin, end in latencies if begin < back_up and end > went_down]
    print(
        f"\n[measure] postgres down {back_up - went_down:.1f}s under traffic: {len(results)} requests, "
        f"{len(overlapping)} overlapping the outage (max latency {max(overlapping, default=0):.1f}s), "
        f"{len(failures)} failed (codes {sorted({c for _, c in failures})}); "
        f"auth recovered {recovery:.1f}s after postgres was back (N); LiteLLM not restarted"
    )
    assert all(pid_alive(pid) for pid in litellm_pids), "LiteLLM must not have been restarted"
    assert [int(str(e["pid"])) for e in load_pids() if e["name"] == "litellm"] == litellm_pids
    assert recovery <= 60

    # A new user after the restart: the operator provisions it and its (uncached) key authenticates.
    started = time.monotonic()
    new_value = provisioned("r-pg-new", basic, timeout=90)
    wait_for("new key works", lambda: chat(gateway, new_value, "model-cheap").status_code == 200, timeout=60)
    print(f"[measure] new user after the restart: Ready and key working in {time.monotonic() - started:.1f}s")
    converged(h, "r-pg", "r-pg-new")


# --- 5. two operator replicas ----------------------------------------------------------------------------


def _handled(replica: OperatorProcess, name: str) -> bool:
    return f"[{NS}/{name}] Handler 'user_reconcile' succeeded" in replica.log_text()


def test_two_replicas_with_kopf_peering_only_the_highest_priority_acts_and_the_other_takes_over(
    h: Harness, basic: str
) -> None:
    """With KOPF_PEERING (and kopf's peering CRD), replicas see each other and only the live one of the
    highest priority acts; kopf pauses every replica that shares the top priority, which is why the operator
    draws a random priority per process unless KOPF_PEERING_PRIORITY pins one. Asserted: a new GatewayUser
    is handled by the active replica only, with exactly one key; after the active replica is SIGKILLed
    (its peering record stays until its lifetime ends), the standby resumes and handles the next user."""
    peering = f"resil-{RUN}"
    kubectl("apply", "-f", str(HERE / "kopf-peering.yaml"))
    wait_for(
        "peering CRD established",
        lambda: (
            "True"
            in kubectl(
                "get",
                "crd",
                "clusterkopfpeerings.kopf.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            )
        ),
        timeout=30,
    )
    apply({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}})
    h.operator.stop()
    lifetime = 10
    replicas: list[OperatorProcess] = []
    try:
        for i, priority in enumerate((100, 200)):  # the second one started wins
            env = operator_env(
                h.env,
                0,
                LITELLM_ADMIN_URL=h.proxy.url,
                KOPF_PEERING=peering,
                KOPF_PEERING_PRIORITY=str(priority),
                KOPF_PEERING_LIFETIME_SECONDS=str(lifetime),
                RESYNC_INTERVAL_SECONDS="3600",
                LITELLM_BACKOFF_SECONDS="0.2",
                LITELLM_RETRIES="2",
            )
            replica = OperatorProcess(f"operator-resil-{RUN}-replica{i}", env)
            LOGS.append(replica.log_path)
            replicas.append(replica.start())
        standby, active = replicas
        wait_for(
            "the lower-priority replica pauses in favour of the other",
            lambda: "Pausing operations in favour of" in standby.log_text(),
            timeout=30,
            interval=0.5,
        )
        assert "Pausing" not in active.log_text(), active.log_tail()
        h.proxy.reset()
        apply(user("r-peer", basic))
        wait_ready("r-peer", timeout=60)
        wait_for("the active replica logs the handler", lambda: _handled(active, "r-peer"), timeout=15)
        assert not _handled(standby, "r-peer"), standby.log_tail()
        assert h.proxy.count("POST /key/generate") == 1, h.proxy.calls
        assert_one_key_matching_secret(h, "r-peer")

        active.kill()  # no clean exit: its peering record lingers until the lifetime ends
        killed_at = time.monotonic()
        apply(user("r-peer-2", basic))
        wait_ready("r-peer-2", timeout=lifetime + 60)
        print(
            f"\n[measure] failover after SIGKILL of the active replica: next user Ready in "
            f"{time.monotonic() - killed_at:.1f}s (peering lifetime {lifetime}s)"
        )
        assert "Resuming operations" in standby.log_text(), standby.log_tail()
        wait_for("the standby logs the handler", lambda: _handled(standby, "r-peer-2"), timeout=15)
        assert_one_key_matching_secret(h, "r-peer-2")
    finally:
        for replica in replicas:
            replica.stop()
        kubectl("delete", "clusterkopfpeering", peering, "--wait=false", check=False)
        h.restart()
    converged(h, "r-peer", "r-peer-2")


def test_zz_sentinel_every_user_has_one_key_and_no_key_material_anywhere(h: Harness) -> None:
    items = json.loads(kubectl("get", "gatewayusers", "-n", NS, "-o", "json"))["items"]
    names = [i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp")]
    assert len(names) >= 5
    for name in names:
        assert_one_key_matching_secret(h, name)
    assert len(SEEN_KEYS) >= 5
    assert_no_key_material(h)
    assert "KeyCreated" in kubectl("get", "events", "-n", NS, "-o", "json"), "Events are posted at all"
