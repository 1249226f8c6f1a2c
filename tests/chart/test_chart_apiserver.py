"""Every object the chart renders, for every value set, sent to the local stack's real kube-apiserver as a
server-side dry run (schema, defaulting, admission, our CRDs' validation of the default tiers); the
operator's RBAC applied for real and checked with `kubectl auth can-i` as its ServiceAccount."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.chart.helm import CHART, KUBECTL, NAMESPACE, RELEASE, VALUE_SETS, helm, parse, template_text

pytestmark = pytest.mark.stack


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not KUBECTL.exists():
        raise AssertionError(f"{KUBECTL} is missing: run `make tools`")
    result = subprocess.run(
        [str(KUBECTL), *args], input=stdin, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def apiserver(stack_env: dict[str, str]) -> dict[str, str]:
    """The stack's kube-apiserver with our CRDs established and the namespaces the value sets use."""
    assert "KUBECONFIG" in stack_env
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/gatewaytiers.llmgateway.io",
        "crd/gatewayusers.llmgateway.io",
    )
    for namespace in (NAMESPACE, "team-a", "team-b"):
        manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        kubectl("apply", "-f", "-", stdin=manifest)
    return stack_env


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_object_passes_a_server_side_dry_run(
    apiserver: dict[str, str], value_set: str
) -> None:
    text = template_text(VALUE_SETS[value_set])
    objects = parse(text).docs
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(objects), result.stdout


def test_helm_install_dry_run_server(apiserver: dict[str, str]) -> None:
    """Helm's own server-side path (discovery, hooks in order, CRDs already present)."""
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        "-f",
        str(VALUE_SETS["production"][0]),
    )
    assert "STATUS: pending-install" in result.stdout
    assert "kind: GatewayTier" in result.stdout


def test_the_crds_reject_what_the_chart_must_not_render(apiserver: dict[str, str]) -> None:
    """The default-tier dry run above is meaningful: the same apiserver refuses an invalid tier."""
    bad = yaml.safe_dump(
        {
            "apiVersion": "llmgateway.io/v1alpha1",
            "kind": "GatewayTier",
            "metadata": {"name": "broken"},
            "spec": {"monthlyBudgetUSD": -1, "rpmLimit": 0, "models": []},
        }
    )
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=bad, check=False)
    assert result.returncode != 0
    assert "spec.monthlyBudgetUSD" in result.stderr


RBAC_RELEASE = "rbac-check"


@pytest.fixture(scope="module", params=["all-namespaces", "watch-namespaces"])
def operator_rbac(request: pytest.FixtureRequest, apiserver: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The chart's operator ServiceAccount and RBAC applied for real; yields (mode, the SA's username)."""
    sets = {"operator.watchNamespaces": "{team-a}"} if request.param == "watch-namespaces" else {}
    rendered = parse(
        helm(
            "template",
            RBAC_RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *[a for f in VALUE_SETS["default"] for a in ("-f", str(f))],
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")],
        ).stdout
    )
    rbac = [
        d
        for d in rendered.docs
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding")
        or (d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-operator"))
    ]
    manifest = yaml.safe_dump_all(rbac)
    kubectl("apply", "-f", "-", stdin=manifest)
    try:
        yield str(request.param), f"system:serviceaccount:{NAMESPACE}:{RBAC_RELEASE}-llm-gateway-operator"
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=manifest, check=False)


def can_i(user: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    result = kubectl(*args, check=False)
    return result.stdout.strip() == "yes"


def test_operator_service_account_can_do_exactly_its_job(operator_rbac: tuple[str, str]) -> None:
    mode, sa = operator_rbac
    user_ns = "team-a"
    allowed = [
        ("get", "secrets"),
        ("create", "secrets"),
        ("update", "secrets"),
        ("delete", "secrets"),
        ("watch", "secrets"),
        ("list", "gatewayusers.llmgateway.io"),
        ("watch", "gatewayusers.llmgateway.io"),
        ("patch", "gatewayusers.llmgateway.io"),
        ("patch", "gatewayusers.llmgateway.io/status"),
        ("create", "events"),
        ("list", "deployments.apps"),  # key rotation rolls out the Deployments that opt in
        ("patch", "deployments.apps"),
    ]
    for verb, resource in allowed:
        assert can_i(sa, verb, resource, user_ns), f"{mode}: cannot {verb} {resource} in {user_ns}"
    for verb, resource in [
        ("patch", "gatewaytiers.llmgateway.io"),
        ("patch", "gatewaytiers.llmgateway.io/status"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]:
        assert can_i(sa, verb, resource), f"{mode}: cannot {verb} {resource}"
    denied = [
        ("patch", "secrets"),
        ("delete", "gatewayusers.llmgateway.io"),
        ("create", "gatewaytiers.llmgateway.io"),
        ("delete", "gatewaytiers.llmgateway.io"),
        ("get", "configmaps"),
        ("list", "pods"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "rolebindings"),
        ("update", "events"),
        ("create", "deployments.apps"),
        ("delete", "deployments.apps"),
        ("update", "deployments.apps"),
    ]
    for verb, resource in denied:
        assert not can_i(sa, verb, resource, user_ns), f"{mode}: may {verb} {resource}"
    if mode == "watch-namespaces":  # Secrets only where users live (and its own namespace for events)
        assert not can_i(sa, "get", "secrets", "kube-system")
        assert not can_i(sa, "list", "secrets")
        assert can_i(sa, "list", "namespaces")
    else:
        assert can_i(sa, "list", "secrets")
        assert not can_i(sa, "list", "namespaces")
