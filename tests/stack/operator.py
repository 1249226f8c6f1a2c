"""Stack component: the operator itself (`python -m gateway_operator`) against the stack's kube-apiserver
and LiteLLM. Waits for kopf's liveness endpoint and returns OPERATOR_HEALTH_URL.

Integration tests that need to kill, restart or instrument the operator pause this process
(SIGSTOP/SIGCONT, see tests/integration/operator_harness.py) and run their own operator meanwhile."""

from __future__ import annotations

import os
import urllib.request

from tests.stack.common import REPO_ROOT, StackContext, StackError, free_port

NAME = "operator"


def operator_env(ctx_env: dict[str, str], health_port: int, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LITELLM_", "KUBE"))}
    env.update(
        {
            "KUBECONFIG": ctx_env["KUBECONFIG"],
            "LITELLM_ADMIN_URL": ctx_env["LITELLM_ADMIN_URL"],
            "LITELLM_MASTER_KEY": ctx_env["LITELLM_MASTER_KEY"],
            "GATEWAY_PUBLIC_URL": ctx_env.get("LLM_GATEWAY_URL", ctx_env["LITELLM_ADMIN_URL"] + "/v1"),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(health_port),
            "RESYNC_INTERVAL_SECONDS": "60",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start(ctx: StackContext) -> dict[str, str]:
    for required in ("KUBECONFIG", "LITELLM_ADMIN_URL", "LITELLM_MASTER_KEY"):
        if required not in ctx.env:
            raise StackError(f"operator needs {required} from an earlier component")
    port = free_port()
    python = REPO_ROOT / ".venv" / "bin" / "python"
    process = ctx.spawn(
        NAME,
        [str(python if python.exists() else "python3"), "-m", "gateway_operator"],
        env=operator_env(ctx.env, port),
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}/healthz"
    ctx.wait_until(NAME, lambda: healthy(url), timeout=60, process=process)
    return {"OPERATOR_HEALTH_URL": url, "OPERATOR_PID_NAME": NAME}
