"""Key rotation against the local stack: the real operator process, kube-apiserver and LiteLLM (through the
counting AdminProxy of tests/stack/operator.py, harness imported from test_operator.py).

Measured and asserted: a client that keeps using the OLD key and one that re-reads the Secret before every
request (like an app with the Secret mounted as a volume) both see zero failed requests across the rotation;
the old key works until its grace period ends and is rejected after; spend carries over; opted-in
Deployments get a new pod template; a scheduled rotation happens on time. Numbers are printed as
[measure] lines (run with -s)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.integration import test_operator as it
from tests.integration.test_operator import SEEN_KEYS, Harness, apply, sha, wait_for

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"rot-{RUN}"
ROTATE_AT = "llmgateway.io/rotate-at"
MODEL = "model-cheap"


def get(kind: str, name: str, namespace: str | None = NS) -> dict[str, Any] | None:
    return it.get(kind, name, namespace)


def patch(kind: str, name: str, body: dict[str, Any], namespace: str | None = NS) -> None:
    it.patch(kind, name, body, namespace)


def wait_ready(name: str, timeout: float = 60) -> dict[str, Any]:
    return it.wait_ready(name, NS, timeout)


def secret_data(name: str) -> dict[str, str]:
    obj = get("secret", f"{name}-llm-key") or {}
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    SEEN_KEYS.update(v for k, v in data.items() if "api-key" in k or k == "OPENAI_API_KEY")
    return data


def user(name: str, tier_name: str, **spec: Any) -> dict[str, Any]:
    return it.user(name, tier_name, namespace=NS, **spec)


def keys_of(h: Harness, name: str) -> list[dict[str, Any]]:
    """The user's live key and any retired ones (alias prefix)."""
    return h.admin.keys(f"llmgw.{NS}.{name}")


def reasons(name: str) -> list[str]:
    return [e.get("reason", "") for e in it.events_of(name, NS)]


def chat(gateway: str, key: str) -> int:
    return it.chat_status(gateway, key, MODEL)


def rotate(name: str, when: str | None = None) -> str:
    value = when or datetime.now(UTC).isoformat().replace("+00:00", "Z")
    patch("gatewayuser", name, {"metadata": {"annotations": {ROTATE_AT: value}}})
    return value


class Traffic:
    """Background clients: one keeps the key it started with, one re-reads the Secret before each call."""

    def __init__(self, gateway: str, name: str, old_key: str):
        self.gateway, self.name, self.old_key = gateway, name, old_key
        self.old: list[int] = []
        self.reread: list[tuple[str, int]] = []  # (key hash, status)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._old_client, daemon=True),
            threading.Thread(target=self._rereading_client, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        wait_for("traffic flowing", lambda: len(self.old) >= 3 and len(self.reread) >= 3, timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _old_client(self) -> None:
        while not self._stop.is_set():
            self.old.append(chat(self.gateway, self.old_key))
            time.sleep(0.05)

    def _rereading_client(self) -> None:
        while not self._stop.is_set():
            key = secret_data(self.name).get("api-key", "")
            self.reread.append((sha(key), chat(self.gateway, key)))


@pytest.fixture(scope="module")
def h(stack_env: dict[str, str]) -> Iterator[Harness]:
    with it.isolated_harness(stack_env, NS, RUN) as harness:
        yield harness


@pytest.fixture(scope="module")
def basic(h: Harness) -> str:
    return it.ready_tier(f"rot-{RUN}", budget=20, rpm=10000, models=(MODEL,))


def deployment(name: str, secret: str | None) -> dict[str, Any]:
    annotations = {"llmgateway.io/rotation-rollout": secret} if secret else {}
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def template_annotations(name: str) -> dict[str, str]:
    obj = get("deployment", name) or {}
    return dict(obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {})


def test_on_demand_rotation_has_zero_failed_requests_and_revokes_after_grace(h: Harness, basic: str) -> None:
    name = "rot-demand"
    apply(deployment("app", f"{name}-llm-key"), deployment("bystander", None))
    apply(user(name, basic, keyRotation={"gracePeriod": "20s"}))
    wait_ready(name)
    old = secret_data(name)["api-key"]
    h.admin.update_key(sha(old), spend=1.5)
    gateway = h.env["LLM_GATEWAY_URL"]

    with Traffic(gateway, name, old) as traffic:
        time.sleep(1)
        h.proxy.reset()
        started = time.monotonic()
        requested = rotate(name)
        new = wait_for(
            "Secret holds the new key",
            lambda: v if (v := secret_data(name).get("api-key")) and v != old else None,
            timeout=30,
            interval=0.05,
        )
        swapped = time.monotonic() - started
        obj = wait_for(
            "status shows the rotation",
            lambda: o if (o := get("gatewayuser", name)) and o["status"].get("handledRotateAt") else None,
        )
        time.sleep(3)  # both clients keep going on either side of the swap
        writes = h.proxy.writes()
    print(
        f"\n[measure] on-demand rotation: annotation -> Secret swapped {swapped:.2f}s; admin calls "
        f"{dict(h.proxy.calls)}; old-key client {len(traffic.old)} requests, "
        f"{sum(1 for c in traffic.old if c != 200)} failed; Secret-rereading client {len(traffic.reread)} "
        f"requests, {sum(1 for _, c in traffic.reread if c != 200)} failed"
    )
    assert [c for c in traffic.old if c != 200] == [], "the old key must keep working during the grace period"
    assert [c for _, c in traffic.reread if c != 200] == [], "a client re-reading the Secret never fails"
    assert {k for k, _ in traffic.reread} >= {sha(old), sha(new)}, "it saw both keys"
    assert writes.get("POST /key/update") == 1 and writes.get("POST /key/generate") == 1
    assert "POST /key/delete" not in writes, "nothing is revoked before the grace period ends"

    data = secret_data(name)
    assert data["previous-api-key"] == old and data["OPENAI_API_KEY"] == new
    assert "pending-api-key" not in data
    status = obj["status"]
    assert status["handledRotateAt"] == requested and status["lastRotationTime"]
    assert status["keyId"] == sha(new)[:12]
    [retired_status] = status["retiredKeys"]
    assert retired_status["keyId"] == sha(old)[:12]
    keys = {k["key_alias"]: k for k in keys_of(h, name)}
    live, retired = keys[f"llmgw.{NS}.{name}"], keys[f"llmgw.{NS}.{name}:retired-{sha(old)[:12]}"]
    # Carried: 1.5 plus what the old-key client spent before the rename (the new key's own requests after).
    assert live["token"] == sha(new) and 1.5 <= live["spend"] < 1.6, "spend carried over"
    assert retired["token"] == sha(old) and not retired.get("blocked")
    assert retired["metadata"]["llmgw_retire_after"] == retired_status["expiresAt"]
    assert "KeyRotated" in reasons(name)
    assert template_annotations("app") == {"llmgateway.io/rotated-key-id": sha(new)[:12]}
    assert template_annotations("bystander") == {}

    # Same annotation value again (e.g. a re-applied manifest): no second rotation.
    patch("gatewayuser", name, {"metadata": {"labels": {"touched": "yes"}}})
    time.sleep(3)
    assert secret_data(name)["api-key"] == new

    # The grace period ends: the old key is revoked (the tier's rotation daemon wakes for it).
    expires = datetime.fromisoformat(retired_status["expiresAt"].replace("Z", "+00:00"))
    wait_for(
        "retired key revoked",
        lambda: [k["key_alias"] for k in keys_of(h, name)] == [f"llmgw.{NS}.{name}"],
        timeout=75,
        interval=0.5,
    )
    late = (datetime.now(UTC) - expires).total_seconds()
    print(f"[measure] retired key revoked {late:.1f}s after its grace period ended")
    assert chat(gateway, old) in (401, 403), "the old key no longer works"
    assert chat(gateway, new) == 200
    wait_for("previous-api-key dropped", lambda: "previous-api-key" not in secret_data(name), timeout=15)
    wait_for("status without retired keys", lambda: not get("gatewayuser", name)["status"].get("retiredKeys"))
    assert "RetiredKeyRevoked" in reasons(name)


def test_scheduled_rotation_happens_on_time(h: Harness, basic: str) -> None:
    name = "rot-sched"
    apply(user(name, basic, keyRotation={"every": "30s", "gracePeriod": "5s"}))
    obj = wait_ready(name)
    first = secret_data(name)["api-key"]
    due = datetime.fromisoformat(obj["status"]["nextRotationTime"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert 29 <= (due - created).total_seconds() <= 32
    second = wait_for(
        "scheduled rotation",
        lambda: v if (v := secret_data(name).get("api-key")) and v != first else None,
        timeout=75,
        interval=0.5,
    )
    late = (datetime.now(UTC) - due).total_seconds()
    print(f"\n[measure] scheduled rotation done {late:.1f}s after it was due (daemon poll <= 30 s)")
    assert late < 35
    status = wait_for(
        "next rotation scheduled",
        lambda: s if (s := get("gatewayuser", name)["status"]).get("keyId") == sha(second)[:12] else None,
    )
    last = datetime.fromisoformat(status["lastRotationTime"].replace("Z", "+00:00"))
    following = datetime.fromisoformat(status["nextRotationTime"].replace("Z", "+00:00"))
    assert (following - last).total_seconds() == 30
    assert chat(h.env["LLM_GATEWAY_URL"], second) == 200
    wait_for(
        "the scheduled rotation's old key revoked after its 5s grace period",
        lambda: [k["token"] for k in keys_of(h, name)] == [sha(second)],
        timeout=40,
        interval=0.5,
    )
    assert chat(h.env["LLM_GATEWAY_URL"], first) in (401, 403)
    # Back to every: null stops the schedule.
    patch("gatewayuser", name, {"spec": {"keyRotation": {"every": None}}})
    wait_for("no next rotation", lambda: "nextRotationTime" not in get("gatewayuser", name)["status"])


def test_invalid_rotation_specs_are_rejected_by_the_api_server(h: Harness, basic: str) -> None:
    from tests.stack.kubectl import kubectl_path

    for bad, field in (
        ({"every": "0h"}, "spec.keyRotation.every must be longer than 0"),
        ({"gracePeriod": "1 day"}, "spec.keyRotation.gracePeriod"),
        ({"every": "30d", "gracePeriod": "1.5h"}, "spec.keyRotation.gracePeriod"),
    ):
        result = subprocess.run(
            [kubectl_path(), "apply", "--dry-run=server", "-f", "-"],
            input=json.dumps(user("rot-bad", basic, keyRotation=bad)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and field in result.stderr, (bad, result.stderr)


def test_rotation_latency_and_admin_calls_without_load(h: Harness, basic: str) -> None:
    """Five on-demand rotations in a row, nothing else running: annotation -> Secret swapped, and the admin
    calls each one costs (grace 0s: the old key is revoked in the same pass)."""
    name = "rot-quiet"
    apply(user(name, basic, keyRotation={"gracePeriod": "0s"}))
    wait_ready(name)
    timings: list[float] = []
    calls: list[dict[str, int]] = []
    for i in range(5):
        before = secret_data(name)["api-key"]
        time.sleep(1)
        h.proxy.reset()
        started = time.monotonic()
        rotate(name, f"quiet-{i}")
        wait_for(
            "swapped", lambda old=before: secret_data(name).get("api-key") != old, timeout=30, interval=0.02
        )
        timings.append(time.monotonic() - started)
        wait_for("old key revoked", lambda: len(keys_of(h, name)) == 1, timeout=30)
        time.sleep(1)  # the follow-up reconciles (Secret event, status) settle
        calls.append(dict(h.proxy.calls))
    timings.sort()
    print(
        f"\n[measure] quiet rotation, annotation -> Secret swapped: median {timings[2]:.2f}s, "
        f"min {timings[0]:.2f}s, max {timings[-1]:.2f}s; admin calls per rotation: {calls[-1]}"
    )
    for each in calls:
        writes = {k: v for k, v in each.items() if not k.startswith("GET ")}
        assert writes == {"POST /key/update": 1, "POST /key/generate": 1, "POST /key/delete": 1}, each
    assert chat(h.env["LLM_GATEWAY_URL"], secret_data(name)["api-key"]) == 200
