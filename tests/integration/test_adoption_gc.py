"""Adoption policy and key garbage collection against the real LiteLLM and kube-apiserver of the stack.

A test operator runs instead of the stack's own (paused), first with ADOPTION_POLICY=Ignore and
GC_MODE=dry-run, then restarted with Adopt and revoke; resync every 2 s, orphan grace 1 s. "Foreign" keys
are made the way the previous generation's onboarding script or an admin would: /key/generate with the
master key, under our alias, without our metadata. Everything lives in this module's namespace and tier.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.integration.test_operator import (
    Admin,
    apply,
    get,
    kubectl,
    ready,
    secret_value,
    sha,
    tier,
    wait_for,
    wait_ready,
)
from tests.stack.common import REPO_ROOT, free_port
from tests.stack.operator import OperatorProcess, operator_env, pause_stack_operator

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"it-gc-{RUN}"
TIER = f"gc-{RUN}"
TEAM = f"llmgw-tier-{TIER}"
OURS = {"managed-by": "llm-gateway-operator"}


class Gc:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.admin = Admin(env)
        self.metrics_port = free_port()
        self.operator: OperatorProcess | None = None

    def start(self, **settings: str) -> None:
        if self.operator is not None:
            self.operator.stop()
        base = {
            "METRICS_PORT": str(self.metrics_port),
            "RESYNC_INTERVAL_SECONDS": "2",
            "ORPHAN_GRACE_SECONDS": "1",
            "LITELLM_BACKOFF_SECONDS": "0.2",
        }
        self.operator = OperatorProcess(f"operator-gc-{RUN}", operator_env(self.env, 0, **base, **settings))
        self.operator.start()

    def generate(self, alias: str, metadata: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """A key made with the master key directly (as a script or the UI would); returns its row."""
        body: dict[str, Any] = {"key_alias": alias, **fields}
        if metadata is not None:
            body["metadata"] = metadata
        response = self.admin.http.post("/key/generate", json=body)
        assert response.status_code == 200, response.text[:300]
        token = response.json()["token"]
        info = self.admin.key_info(token)
        assert info is not None
        return {**info, "token": token}

    def metric(self, name: str, **labels: str) -> float | None:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{"):
                found = line[len(name) + 1 : line.index("}")]
                if ",".join(sorted(found.split(","))) == want:
                    return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture(scope="module")
def gc(stack_env: dict[str, str]) -> Iterator[Gc]:
    with pause_stack_operator():
        harness = Gc(stack_env)
        kubectl("create", "namespace", NS)
        harness.start(ADOPTION_POLICY="Ignore", GC_MODE="dry-run")
        apply(tier(TIER, budget=10, rpm=20, models=("model-cheap",)))
        wait_for("tier Ready", lambda: (ready(get("gatewaytier", TIER, None)) or {}).get("status") == "True")
        try:
            yield harness
        finally:
            kubectl("delete", "gatewayusers", "--all", "-n", NS, "--wait=true", "--timeout=60s", check=False)
            kubectl("delete", "gatewaytier", TIER, "--wait=true", "--timeout=30s", check=False)
            leftovers = [k["token"] for k in harness.admin.keys(f"llmgw.{NS}.")]
            if leftovers:
                harness.admin.http.post("/key/delete", json={"keys": leftovers})
            if harness.operator is not None:
                harness.operator.stop()
            kubectl("delete", "namespace", NS, "--wait=false", check=False)


def gw_user(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"email": f"{name}.{RUN}@company.com", "tier": TIER, **spec},
    }


def tier_events(reason: str) -> list[dict[str, Any]]:
    out = kubectl("get", "events", "-A", "--field-selector", f"involvedObject.name={TIER}", "-o", "json")
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def user_events(name: str, reason: str) -> list[dict[str, Any]]:
    out = kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def gatewayctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "gatewayctl"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


def mine(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alias"]: r for r in rows if r["alias"].startswith(f"llmgw.{NS}.")}


# --- adoption -------------------------------------------------------------------------------------------


def test_ignore_leaves_a_foreign_key_alone_and_says_what_to_do(gc: Gc) -> None:
    alias = f"llmgw.{NS}.legacy-ann"
    foreign = gc.generate(alias, spend=1.25, max_budget=50)
    apply(gw_user("legacy-ann"))
    obj = wait_ready("legacy-ann", NS, reason="KeyConflict")
    condition = ready(obj)
    assert condition is not None and condition["status"] == "False"
    assert (
        "spec.adoptionPolicy: Adopt" in condition["message"] and foreign["token"][:12] in condition["message"]
    )
    time.sleep(5)  # two resyncs: still untouched, still one key
    [key] = gc.admin.keys(alias)
    assert key["key_alias"] == alias and key["token"] == foreign["token"]
    assert not key.get("blocked") and key["max_budget"] == 50 and key["spend"] == 1.25
    assert key.get("metadata", {}).get("managed-by") is None
    assert len(user_events("legacy-ann", "KeyConflict")) == 1, "one Event, not one per resync"


def test_adopt_replaces_the_foreign_key_with_its_spend(gc: Gc) -> None:
    alias = f"llmgw.{NS}.legacy-ann"
    foreign = gc.admin.key(alias)
    assert foreign is not None
    gc.start(ADOPTION_POLICY="Adopt", GC_MODE="revoke")
    wait_ready("legacy-ann", NS, timeout=60)
    [key] = gc.admin.keys(alias)  # exactly one key under the alias and no leftover retired one
    value = secret_value("legacy-ann-llm-key", NS)
    assert value is not None and key["token"] == sha(value) != foreign["token"]
    assert key["spend"] == 1.25 and key["team_id"] == TEAM and key["max_budget"] == 10
    assert key["metadata"]["managed-by"] == "llm-gateway-operator"
    old = gc.admin.key_info(foreign["token"])
    assert old is None or old.get("status") == "deleted", "the foreign key must be revoked"
    [event] = user_events("legacy-ann", "KeyAdopted")
    assert foreign["token"][:12] in event["message"] and "1.2500" in event["message"]
    # The key works.
    answer = httpx.get(
        f"{gc.env['LITELLM_ADMIN_URL']}/key/info", headers={"Authorization": f"Bearer {value}"}
    )
    assert answer.status_code == 200


# --- garbage collection ---------------------------------------------------------------------------------


def test_operator_gc_revokes_orphans_and_stale_retired_keys_only(gc: Gc) -> None:
    now = datetime.now(UTC)
    later = (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    orphan = gc.generate(f"llmgw.{NS}.ghost", {**OURS, "namespace": NS, "name": "ghost"}, team_id=TEAM)
    foreign = gc.generate(f"llmgw.{NS}.nobody", None, team_id=TEAM)
    waiting = gc.generate(
        f"llmgw.{NS}.legacy-ann:retired-aaaaaaaaaaaa", {**OURS, "llmgw_retire_after": later}, team_id=TEAM
    )
    stale = gc.generate(
        f"llmgw.{NS}.legacy-ann:retired-bbbbbbbbbbbb", {**OURS, "llmgw_retire_after": past}, team_id=TEAM
    )

    def revoked() -> str:
        # The orphan becomes due ORPHAN_GRACE_SECONDS after its creation, the stale retired key at once:
        # one pass may revoke the stale key alone and the next the orphan, so wait for both reports.
        message = " ".join(e["message"] for e in tier_events("OrphanKeysRevoked"))
        return message if "ghost (key" in message and "retired-bbbbbbbbbbbb (key" in message else ""

    message = wait_for("OrphanKeysRevoked on the tier, for both keys", revoked, timeout=30, interval=0.5)
    assert f"llmgw.{NS}.ghost (key {orphan['token'][:12]}, team {TEAM}" in message
    assert f"retired-bbbbbbbbbbbb (key {stale['token'][:12]}" in message
    assert "nobody" not in message and "aaaaaaaaaaaa" not in message
    assert orphan["token"] not in message
    aliases = {k["key_alias"]: k["token"] for k in gc.admin.keys(f"llmgw.{NS}.")}
    assert f"llmgw.{NS}.ghost" not in aliases and stale["key_alias"] not in aliases
    assert aliases[foreign["key_alias"]] == foreign["token"], "a key that is not ours was touched"
    assert aliases[waiting["key_alias"]] == waiting["token"], "a retired key was revoked before its time"
    assert aliases[f"llmgw.{NS}.legacy-ann"]  # the live user's key is fine
    log = gc.operator.log_text() if gc.operator else ""
    assert "key gc tier=" + TIER + " action=revoked" in log and orphan["token"] not in log


def test_dry_run_reports_without_revoking(gc: Gc) -> None:
    gc.start(ADOPTION_POLICY="Ignore", GC_MODE="dry-run")
    orphan = gc.generate(f"llmgw.{NS}.ghost-two", {**OURS}, team_id=TEAM)
    events = wait_for("OrphanKeysFound", lambda: tier_events("OrphanKeysFound"), timeout=30, interval=0.5)
    assert any(f"llmgw.{NS}.ghost-two (key {orphan['token'][:12]}" in e["message"] for e in events)
    assert all(e["type"] == "Warning" and "GC_MODE=dry-run" in e["message"] for e in events)
    assert wait_for("metric", lambda: gc.metric("llmgw_orphan_keys", tier=TIER, action="dry-run"), 10) == 1
    time.sleep(4)  # more resyncs: still there, and the unchanged report was not re-posted
    assert gc.admin.key(f"llmgw.{NS}.ghost-two") is not None
    assert len(tier_events("OrphanKeysFound")) == len(events)


def test_cli_lists_then_revokes_orphans_in_any_namespace(gc: Gc) -> None:
    dry = gatewayctl("keys", "gc", "--dry-run", "--grace", "0", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    rows = mine(json.loads(dry.stdout))
    assert rows[f"llmgw.{NS}.ghost-two"]["action"] == "would revoke"
    assert (
        rows[f"llmgw.{NS}.ghost-two"]["team"] == TEAM and rows[f"llmgw.{NS}.ghost-two"]["reason"] == "orphan"
    )
    kept = rows[f"llmgw.{NS}.legacy-ann:retired-aaaaaaaaaaaa"]
    assert kept["action"].startswith("kept until ") and kept["reason"] == "retired"
    assert f"llmgw.{NS}.nobody" not in rows and f"llmgw.{NS}.legacy-ann" not in rows
    assert "sk-" not in dry.stdout and gc.admin.key(f"llmgw.{NS}.ghost-two") is not None

    table = gatewayctl("keys", "gc", "--dry-run", "--grace", "0")
    assert (
        table.returncode == 0 and f"llmgw.{NS}.ghost-two" in table.stdout and "would revoke" in table.stdout
    )
    assert "not created by the operator left alone" in table.stderr

    done = gatewayctl("keys", "gc", "--grace", "0", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert mine(json.loads(done.stdout))[f"llmgw.{NS}.ghost-two"]["action"] == "revoked"
    assert gc.admin.key(f"llmgw.{NS}.ghost-two") is None
    assert gc.admin.key(f"llmgw.{NS}.nobody") is not None
    assert gc.admin.key(f"llmgw.{NS}.legacy-ann:retired-aaaaaaaaaaaa") is not None
    again = gatewayctl("keys", "gc", "--grace", "0", "-o", "json")
    assert f"llmgw.{NS}.ghost-two" not in mine(json.loads(again.stdout))
