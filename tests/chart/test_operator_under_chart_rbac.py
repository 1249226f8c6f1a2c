"""The operator, authenticated as the chart's ServiceAccount with only the chart's RBAC, does its whole
job against the local stack (real kube-apiserver with RBAC, real LiteLLM): the RBAC covers every verb it
uses. (test_chart_apiserver.py shows, with `kubectl auth can-i`, that it grants nothing more.)

The ServiceAccount's token comes from the TokenRequest API (`kubectl create token`), so the API server
authenticates and authorises the operator exactly as in a cluster. The stack's own operator (admin
credentials) is paused meanwhile."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.chart.helm import CHART, KUBECTL, NAMESPACE, VALUE_SETS, helm, parse

pytestmark = pytest.mark.stack

RUN = secrets.token_hex(3)
RELEASE = "rbac-op"
SERVICE_ACCOUNT = f"{RELEASE}-llm-gateway-operator"


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> str:
    result = subprocess.run(
        [str(KUBECTL), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args[:4])}: {result.stderr.strip()}")
    return result.stdout


def apply_tier(name: str) -> None:
    """A small GatewayTier ($5, 20 RPM, model-cheap) for the tests that need one."""
    spec = {"monthlyBudgetUSD": 5, "rpmLimit": 20, "models": ["model-cheap"]}
    tier = {"apiVersion": "llmgateway.io/v1alpha1", "kind": "GatewayTier", "metadata": {"name": name}}
    kubectl("apply", "-f", "-", stdin=json.dumps({**tier, "spec": spec}))


def apply_user(name: str, namespace: str, email: str, tier: str) -> None:
    user = {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"email": email, "tier": tier},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(user))


def get(kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"] + (["-n", namespace] if namespace else [])
    out = kubectl(*args)
    return json.loads(out) if out.strip() else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def ready(obj: dict[str, Any] | None) -> bool:
    conditions = (obj or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def service_account_kubeconfig(admin_kubeconfig: str, token: str, path: Path) -> Path:
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "operator",
        "clusters": [cluster],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        # In a pod the namespace is the ServiceAccount's (kopf posts cluster-scoped objects' events there).
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": cluster["name"], "user": SERVICE_ACCOUNT, "namespace": NAMESPACE},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(params=["all-namespaces", "watch-namespaces"])
def operator_as_chart_sa(
    request: pytest.FixtureRequest, stack_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, str, Any]]:
    """(mode, user namespace, the running operator process) with the chart's RBAC and nothing else."""
    from tests.stack.operator import OperatorProcess, operator_env, pause_stack_operator

    mode = str(request.param)
    user_ns = f"rbac-{RUN}-{mode[:3]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for namespace in (NAMESPACE, user_ns):
        kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
    sets = ["--set", f"operator.watchNamespaces={{{user_ns}}}"] if mode == "watch-namespaces" else []
    rendered = parse(
        helm(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *[a for f in VALUE_SETS["default"] for a in ("-f", str(f))],
            *sets,
        ).stdout
    )
    rbac = [
        d
        for d in rendered.docs
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding")
        or (d["kind"] == "ServiceAccount" and d["metadata"]["name"] == SERVICE_ACCOUNT)
    ]
    manifest = yaml.safe_dump_all(rbac)
    kubectl("apply", "-f", "-", stdin=manifest)
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h").strip()
    kubeconfig = service_account_kubeconfig(stack_env["KUBECONFIG"], token, tmp_path / "operator.kubeconfig")
    env = operator_env(
        stack_env,
        0,
        KUBECONFIG=str(kubeconfig),
        RESYNC_INTERVAL_SECONDS="30",
        WATCH_NAMESPACES=user_ns if mode == "watch-namespaces" else "",
    )
    operator = OperatorProcess(f"operator-chart-rbac-{RUN}-{mode}", env)
    with cast(AbstractContextManager[object], pause_stack_operator()):
        operator.start()
        try:
            yield mode, user_ns, operator
        finally:
            operator.stop()
            kubectl("delete", "namespace", user_ns, "--wait=false", "--ignore-not-found", check=False)
            kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=manifest, check=False)


def test_operator_does_its_whole_job_with_only_the_chart_rbac(
    operator_as_chart_sa: tuple[str, str, Any],
) -> None:
    mode, ns, operator = operator_as_chart_sa
    tier, user = f"rbac-{RUN}-{mode[:3]}", "alice"
    apply_tier(tier)
    apply_user(user, ns, f"alice-{RUN}-{mode[:3]}@example.com", tier)
    try:
        # create: LiteLLM user + key, the Secret, status and events; the tier's status too.
        obj = wait_for("GatewayUser Ready", lambda: (o := get("gatewayuser", user, ns)) and ready(o) and o)
        secret_name = obj["status"]["secretName"]
        first = wait_for("Secret", lambda: get("secret", secret_name, ns))
        wait_for("GatewayTier Ready", lambda: ready(get("gatewaytier", tier, None)))
        # watch of labelled Secrets: a Secret deleted by hand is recreated.
        kubectl("delete", "secret", secret_name, "-n", ns)
        wait_for(
            "Secret recreated",
            lambda: (
                (s := get("secret", secret_name, ns)) and s["metadata"]["uid"] != first["metadata"]["uid"]
            ),
        )
        # update: a per-user override reaches status (status patch, no new key).
        kubectl("patch", "gatewayuser", user, "-n", ns, "--type=merge", "-p", '{"spec": {"rpmLimit": 7}}')
        wait_for(
            "override in status",
            lambda: (get("gatewayuser", user, ns) or {}).get("status", {}).get("rpmLimit") == 7,
        )
        # delete: the finalizer runs (LiteLLM key and user removed) and lets everything go.
        kubectl("delete", "gatewayuser", user, "-n", ns, "--wait=false")
        wait_for("GatewayUser gone", lambda: get("gatewayuser", user, ns) is None)
        kubectl("delete", "gatewaytier", tier, "--wait=false")
        wait_for("GatewayTier gone", lambda: get("gatewaytier", tier, None) is None)
    finally:
        kubectl("delete", "gatewayuser", user, "-n", ns, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "gatewaytier", tier, "--ignore-not-found", "--wait=false", check=False)
    log = operator.log_text()
    for denied in ("Forbidden", "forbidden", "Not enough permissions"):
        assert denied not in log, f"{mode}: the operator hit a permission error:\n{operator.log_tail(60)}"
