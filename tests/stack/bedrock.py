"""The Bedrock Runtime stub (tests/stack/bedrock_stub) as a stack component, plus a small admin client.

With the ``sts`` component up, the stub runs in ``verify`` mode: it accepts only credentials moto issued and
recomputes every SigV4 signature. Without it (``--skip sts``) it falls back to ``shape`` mode.

``StubAdmin`` drives the ``/_stub/`` knobs from tests, the demo and the benchmark::

    admin = StubAdmin(os.environ["BEDROCK_STUB_URL"])
    admin.fail_next(429, count=2)          # next two calls: ThrottlingException
    admin.set(usage={"inputTokens": 10_000_000, "outputTokens": 0}, usageCalls=1)   # exhaust a budget
    admin.calls(); admin.reset()
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from tests.stack.common import REPO_ROOT, StackContext, free_port, python_executable, say


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/_stub/health", timeout=2) as response:
        return bool(response.status == 200)


def start(ctx: StackContext) -> dict[str, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sts_url = ctx.env.get("STS_URL", "")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "BEDROCK_STUB_"))}
    env.update(
        {
            "BEDROCK_STUB_HOST": "127.0.0.1",
            "BEDROCK_STUB_PORT": str(port),
            "BEDROCK_STUB_REGION": ctx.env.get("AWS_DEFAULT_REGION", "us-east-1"),
            "BEDROCK_STUB_SIGV4": "verify" if sts_url else "shape",
            "BEDROCK_STUB_STS_URL": sts_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    process = ctx.spawn(
        "bedrock", [python_executable(), "-m", "tests.stack.bedrock_stub"], env=env, cwd=REPO_ROOT
    )
    ctx.wait_until("bedrock", lambda: _ready(url), timeout=30, process=process)
    say(f"bedrock: stub on {url} (sigv4 {env['BEDROCK_STUB_SIGV4']})")
    return {"BEDROCK_STUB_URL": url}


class StubAdmin:
    """Client for the stub's ``/_stub/`` admin endpoints (JSON)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = (url or os.environ["BEDROCK_STUB_URL"]).rstrip("/")

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def knobs(self) -> dict[str, Any]:
        return dict(self._request("GET", "/_stub/knobs"))

    def set(self, **knobs: Any) -> dict[str, Any]:
        """Partial update: latencyMs, streamDelayMs, fail {status, count, operations?, midStream?, code?,
        message?}, usage {inputTokens?, outputTokens?} and usageCalls (None: until reset)."""
        return dict(self._request("POST", "/_stub/knobs", knobs))

    def fail_next(self, status: int, count: int = 1, **extra: Any) -> dict[str, Any]:
        return self.set(fail={"status": status, "count": count, **extra})

    def reset(self) -> None:
        self._request("POST", "/_stub/reset")

    def calls(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/_stub/calls"))

    def clear_calls(self) -> None:
        self._request("DELETE", "/_stub/calls")
