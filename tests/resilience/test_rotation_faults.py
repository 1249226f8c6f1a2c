"""The operator SIGKILLed at each step of a key rotation, and of the revocation that ends its grace period,
on the local stack (real LiteLLM, kube-apiserver, operator process). Same machinery as test_faults.py:
the stack's operator is paused, a test operator runs behind the AdminProxy, which holds the admin call of
the step under test so the process can be killed exactly there; then a fresh operator finishes the job.

Asserted every time: the rotation completes exactly once (one new key, generated once), exactly one live
key whose value is the Secret's api-key, the old key retired-but-working until its grace period ends,
previous-api-key = the old value, no pending key left, a client using the old key never failed (during
the kill and the restart), spend carried over (and a grace period's spend added to the live key exactly
once), and no key material in logs, Events or status."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration import test_operator as it
from tests.integration.test_operator import SEEN_KEYS, Harness, apply, sha, wait_for
from tests.resilience.test_faults import assert_no_key_material

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
NS = f"rotfault-{RUN}"
MODEL = "model-cheap"


def get(kind: str, name: str, namespace: str | None = NS) -> dict[str, Any] | None:
    return it.get(kind, name, namespace)


def secret_data(name: str) -> dict[str, str]:
    obj = get("secret", f"{name}-llm-key") or {}
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    SEEN_KEYS.update(v for k, v in data.items() if "api-key" in k)
    return data


def keys_of(h: Harness, name: str) -> dict[str, dict[str, Any]]:
    return {k["key_alias"]: k for k in h.admin.keys(f"llmgw.{NS}.{name}")}


def chat(gateway: str, key: str) -> int:
    return it.chat_status(gateway, key, MODEL)


class OldKeyClient:
    def __init__(self, gateway: str, key: str):
        self.gateway, self.key = gateway, key
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OldKeyClient:
        self._thread.start()
        wait_for("old-key traffic", lambda: len(self.codes) >= 2, timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.codes.append(chat(self.gateway, self.key))
            time.sleep(0.1)


@pytest.fixture(scope="module")
def h(stack_env: dict[str, str]) -> Iterator[Harness]:
    with it.isolated_harness(stack_env, NS, RUN) as harness:
        yield harness


@pytest.fixture(scope="module")
def basic(h: Harness) -> str:
    return it.ready_tier(f"rotf-{RUN}", budget=20, rpm=10000, models=(MODEL,))


def provision(h: Harness, basic: str, prefix: str, path: str, when: str, grace: str) -> tuple[str, str]:
    """A user named after the step under test (``path``, ``when``), Ready, its key's spend set to 2.0:
    returns (name, its key)."""
    name = f"{prefix}-{path.split('/')[-1]}-{when}"
    apply(it.user(name, basic, namespace=NS, keyRotation={"gracePeriod": grace}))
    it.wait_ready(name, NS)
    old = secret_data(name)["api-key"]
    h.admin.update_key(sha(old), spend=2.0)
    return name, old


def request_rotation(name: str, at: str) -> None:
    it.patch("gatewayuser", name, {"metadata": {"annotations": {"llmgateway.io/rotate-at": at}}}, NS)


def assert_rotated_once(h: Harness, name: str, old: str) -> str:
    alias = f"llmgw.{NS}.{name}"
    wait_for(
        "rotation finished",
        lambda: (
            (s := get("gatewayuser", name) or {}).get("status", {}).get("handledRotateAt")
            and s["status"].get("keyId") != sha(old)[:12]
        ),
        timeout=60,
    )
    data = secret_data(name)
    new = data["api-key"]
    keys = keys_of(h, name)
    assert set(keys) == {alias, f"{alias}:retired-{sha(old)[:12]}"}, f"one live + one retired: {sorted(keys)}"
    assert keys[alias]["token"] == sha(new) != sha(old), "the Secret's key is the live one"
    assert keys[f"{alias}:retired-{sha(old)[:12]}"]["token"] == sha(old)
    assert data["previous-api-key"] == old and "pending-api-key" not in data
    assert keys[alias]["spend"] == pytest.approx(2.0, abs=0.05), "spend carried over"
    return new


ROTATION_STEPS = [
    ("/key/update", "before"),  # the pending key is in the Secret; the rename never reached LiteLLM
    ("/key/update", "after"),  # renamed (still valid), the new key not generated yet
    ("/key/generate", "before"),
    ("/key/generate", "after"),  # the new key exists under the live alias; the Secret not swapped yet
]


@pytest.mark.parametrize(("path", "when"), ROTATION_STEPS)
def test_killed_at_each_step_of_a_rotation_finishes_it_exactly_once(
    h: Harness, basic: str, path: str, when: str
) -> None:
    name, old = provision(h, basic, "rk", path, when, grace="10m")
    gateway = h.env["LLM_GATEWAY_URL"]
    requested = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with OldKeyClient(gateway, old) as client:
        it.kill_at(h, path, when, lambda: request_rotation(name, requested), timeout=60)
        mid = secret_data(name)
        assert mid["api-key"] == old and mid.get("pending-api-key"), "killed mid-rotation"
        h.proxy.reset()
        started = time.monotonic()
        h.restart()
        healthy = time.monotonic()
        new = assert_rotated_once(h, name, old)
        resumed = time.monotonic() - healthy
        time.sleep(1)
    assert new == mid["pending-api-key"], "the restarted operator finished THIS rotation, not a new one"
    generated = h.proxy.count("POST /key/generate")
    print(
        f"\n[measure] killed at {when} {path}: new operator healthy {healthy - started:.1f}s after the kill, "
        f"rotation finished {resumed:.1f}s later; admin calls "
        f"after restart {dict(h.proxy.calls)}; old-key client {len(client.codes)} requests, "
        f"{sum(1 for c in client.codes if c != 200)} failed"
    )
    assert generated == (0 if (path, when) == ("/key/generate", "after") else 1), "the new key generated once"
    assert [c for c in client.codes if c != 200] == [], "the old key never stopped working"
    assert chat(gateway, new) == 200 and chat(gateway, old) == 200, "both work during the grace period"
    status = (get("gatewayuser", name) or {})["status"]
    assert status["handledRotateAt"] == requested and status["keyId"] == sha(new)[:12]
    assert [r["keyId"] for r in status["retiredKeys"]] == [sha(old)[:12]]
    # A resync or re-run does not rotate again for the same request.
    time.sleep(2)
    assert secret_data(name)["api-key"] == new
    assert_no_key_material(h)


REVOKE_STEPS = [
    ("/key/update", "after"),  # the grace-period spend was added to the live key; the delete not sent
    ("/key/delete", "before"),
]


@pytest.mark.parametrize(("path", "when"), REVOKE_STEPS)
def test_killed_while_revoking_after_the_grace_period_adds_its_spend_once(
    h: Harness, basic: str, path: str, when: str
) -> None:
    name, old = provision(h, basic, "rv", path, when, grace="12s")
    gateway = h.env["LLM_GATEWAY_URL"]
    request_rotation(name, "now")
    new = assert_rotated_once(h, name, old)
    alias = f"llmgw.{NS}.{name}"
    # What the old key spends during the grace period (set directly: exact numbers).
    h.admin.update_key(sha(old), spend=2.0 + 0.5)
    live_spend = keys_of(h, name)[alias]["spend"]
    expires = (get("gatewayuser", name) or {})["status"]["retiredKeys"][0]["expiresAt"]

    def wait_for_expiry() -> None:
        deadline = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))

    it.kill_at(h, path, when, wait_for_expiry, timeout=60)
    h.restart()
    wait_for("retired key revoked", lambda: set(keys_of(h, name)) == {alias}, timeout=60)
    wait_for("previous-api-key dropped", lambda: "previous-api-key" not in secret_data(name), timeout=30)
    live = keys_of(h, name)[alias]
    print(
        f"\n[measure] killed at {when} {path} during revocation: live spend {live_spend} -> {live['spend']}"
    )
    assert live["token"] == sha(new)
    assert live["spend"] == pytest.approx(live_spend + 0.5, abs=1e-6), "grace-period spend added exactly once"
    assert chat(gateway, old) in (401, 403) and chat(gateway, new) == 200
    wait_for(
        "status without retired keys",
        lambda: not (get("gatewayuser", name) or {})["status"].get("retiredKeys"),
    )
    assert_no_key_material(h)
