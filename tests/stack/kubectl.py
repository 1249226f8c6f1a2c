"""Small kubectl wrapper shared by `make demo` and the end-to-end tests.

It shells out to the real kubectl (bin/kubectl from `make tools`, else the one on PATH) with the
stack's KUBECONFIG, the way an admin would. Key values are returned to the caller, never printed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.stack.common import REPO_ROOT


class KubectlError(RuntimeError):
    pass


def kubectl_path() -> str:
    local = REPO_ROOT / "bin" / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if not found:
        raise KubectlError("kubectl not found: run `make tools`")
    return found


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> str:
    run_env = dict(os.environ)
    if env:
        run_env.update(env)
    result = subprocess.run(
        [kubectl_path(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=run_env,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout if result.returncode == 0 else result.stderr


def apply(manifest: str | Path, namespace: str | None = None) -> str:
    args = ["apply", "-f", "-" if isinstance(manifest, str) and "\n" in manifest else str(manifest)]
    if namespace:
        args += ["-n", namespace]
    stdin = manifest if isinstance(manifest, str) and "\n" in manifest else None
    return kubectl(*args, stdin=stdin)


def get_json(kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    out = kubectl(*args, check=False)
    if "NotFound" in out or "not found" in out:
        return None
    return dict(json.loads(out))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def wait_ready(kind: str, name: str, namespace: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the object's Ready condition is True for its current generation."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = get_json(kind, name, namespace)
        if last:
            ready = condition(last, "Ready")
            generation = last["metadata"].get("generation")
            observed = last.get("status", {}).get("observedGeneration")
            if ready and ready.get("status") == "True" and observed == generation:
                return last
        time.sleep(0.25)
    status = (last or {}).get("status")
    raise KubectlError(f"{kind}/{name} not Ready after {timeout:.0f}s; status: {json.dumps(status)}")


def read_secret_value(name: str, namespace: str, key: str) -> str:
    secret = get_json("secret", name, namespace)
    if not secret:
        raise KubectlError(f"secret {namespace}/{name} not found")
    return base64.b64decode(secret["data"][key]).decode()


def user_key(user: dict[str, Any]) -> tuple[str, str]:
    """(api key, base url) from the Secret a Ready GatewayUser points at."""
    namespace = user["metadata"]["namespace"]
    secret_name = user["status"]["secretName"]
    return (
        read_secret_value(secret_name, namespace, "api-key"),
        read_secret_value(secret_name, namespace, "base-url"),
    )
