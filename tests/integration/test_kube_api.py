"""The local stack's Kubernetes API behaves like a cluster's: the things the operator and the chart rely on
(CRD schemas with CEL rules, status subresources, optimistic concurrency, RBAC, garbage collection,
namespace deletion) are enforced by a real kube-apiserver, checked here with the real kubectl."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.stack.kube import controller_manager

pytestmark = pytest.mark.stack

GROUP = "kubetest.llmgw.local"
CRD_NAME = f"widgets.{GROUP}"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["min", "max"],
                                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "min must not exceed max",
                                        "fieldPath": ".max",
                                    }
                                ],
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }
                },
            }
        ],
    },
}


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assets = Path(env["KUBEBUILDER_ASSETS"])
    return subprocess.run(
        [str(assets / "kubectl"), f"--kubeconfig={env['KUBECONFIG']}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = kubectl(env, *args, stdin=stdin)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def get(env: dict[str, str], *args: str) -> dict[str, Any]:
    return dict(json.loads(ok(env, "get", *args, "-o", "json")))


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


def widget(name: str, namespace: str, low: int, high: int, **extra: Any) -> str:
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"min": low, "max": high},
    }
    body.update(extra)
    return json.dumps(body)


@pytest.fixture(scope="module")
def kube(stack_env: dict[str, str]) -> dict[str, str]:
    return stack_env


@pytest.fixture(scope="module")
def namespace(kube: dict[str, str]) -> Iterator[str]:
    name = f"kube-api-test-{uuid.uuid4().hex[:6]}"
    ok(kube, "create", "namespace", name)
    yield name
    kubectl(kube, "delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def widgets(kube: dict[str, str]) -> Iterator[str]:
    ok(kube, "apply", "--server-side", "-f", "-", stdin=json.dumps(CRD))
    ok(kube, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")
    # Established can precede discovery by a moment; kubectl needs the resource in discovery.
    eventually(
        lambda: kubectl(kube, "get", f"widgets.{GROUP}", "-A").returncode == 0, 30, "widgets in discovery"
    )
    yield f"widgets.{GROUP}"
    kubectl(kube, "delete", "crd", CRD_NAME, "--wait=false")


def test_server_is_kubernetes_1_34(kube: dict[str, str]) -> None:
    version = json.loads(ok(kube, "get", "--raw", "/version"))
    assert version["gitVersion"].startswith("v1.34."), version
    assert (version["major"], version["minor"]) == ("1", "34")


def test_cel_rule_rejects_bad_object_naming_the_field(
    kube: dict[str, str], namespace: str, widgets: str
) -> None:
    bad = kubectl(kube, "create", "-f", "-", stdin=widget("inverted", namespace, 5, 1))
    assert bad.returncode != 0
    assert "spec.max" in bad.stderr and "min must not exceed max" in bad.stderr, bad.stderr
    assert kubectl(kube, "get", widgets, "inverted", "-n", namespace).returncode != 0

    ok(kube, "create", "-f", "-", stdin=widget("ordered", namespace, 1, 5))
    assert get(kube, widgets, "ordered", "-n", namespace)["spec"] == {"min": 1, "max": 5}


def test_status_subresource_ignores_status_in_main_resource_update(
    kube: dict[str, str], namespace: str, widgets: str
) -> None:
    ok(kube, "create", "-f", "-", stdin=widget("with-status", namespace, 1, 2))
    current = get(kube, widgets, "with-status", "-n", namespace)
    current["status"] = {"phase": "Sneaky"}
    current["spec"]["max"] = 3
    ok(kube, "replace", "-f", "-", stdin=json.dumps(current))
    after = get(kube, widgets, "with-status", "-n", namespace)
    assert after["spec"]["max"] == 3  # the update itself went through
    assert "status" not in after or after["status"].get("phase") != "Sneaky"

    ok(
        kube,
        "patch",
        widgets,
        "with-status",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Ready"}, "spec": {"max": 99}}),
    )
    patched = get(kube, widgets, "with-status", "-n", namespace)
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["max"] == 3  # and the status endpoint ignores spec


def test_stale_resource_version_gets_409(kube: dict[str, str], namespace: str, widgets: str) -> None:
    ok(kube, "create", "-f", "-", stdin=widget("contended", namespace, 1, 2))
    stale = get(kube, widgets, "contended", "-n", namespace)
    fresh = json.loads(json.dumps(stale))
    fresh["spec"]["max"] = 10
    ok(kube, "replace", "-f", "-", stdin=json.dumps(fresh))

    stale["spec"]["max"] = 20
    conflict = kubectl(kube, "replace", "-f", "-", "-v=6", stdin=json.dumps(stale))
    assert conflict.returncode != 0
    assert "409 Conflict" in conflict.stderr, conflict.stderr[-2000:]
    assert "the object has been modified" in conflict.stderr
    assert get(kube, widgets, "contended", "-n", namespace)["spec"]["max"] == 10


def test_rbac_forbids_a_service_account_without_permissions(kube: dict[str, str], namespace: str) -> None:
    account = "nobody"
    ok(kube, "create", "serviceaccount", account, "-n", namespace)
    subject = f"system:serviceaccount:{namespace}:{account}"
    denied = kubectl(kube, "get", "secrets", "-n", namespace, f"--as={subject}")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr or "forbidden" in denied.stderr, denied.stderr
    assert f'"{subject}" cannot list resource "secrets"' in denied.stderr

    # The same identity succeeds once a Role grants exactly that: the denial was RBAC, not something else.
    ok(kube, "create", "role", "secret-reader", "-n", namespace, "--verb=list", "--resource=secrets")
    ok(
        kube,
        "create",
        "rolebinding",
        "secret-reader",
        "-n",
        namespace,
        "--role=secret-reader",
        f"--serviceaccount={namespace}:{account}",
    )
    eventually(
        lambda: kubectl(kube, "get", "secrets", "-n", namespace, f"--as={subject}").returncode == 0,
        10,
        "the RoleBinding taking effect",
    )
    still_denied = kubectl(kube, "delete", "secret", "anything", "-n", namespace, f"--as={subject}")
    assert "forbidden" in still_denied.stderr.lower(), still_denied.stderr


def require_controller_manager(env: dict[str, str]) -> None:
    if controller_manager(Path(env["KUBEBUILDER_ASSETS"])) is None:
        pytest.skip("no kube-controller-manager in the assets (setup-envtest folder): GC is not running")


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    kube: dict[str, str], namespace: str
) -> None:
    require_controller_manager(kube)
    ok(kube, "create", "configmap", "owner", "-n", namespace, "--from-literal=k=v")
    owner = get(kube, "configmap", "owner", "-n", namespace)
    dependent = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
        "stringData": {"k": "v"},
    }
    bystander = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "unowned", "namespace": namespace},
        "stringData": {"k": "v"},
    }
    ok(kube, "create", "-f", "-", stdin=json.dumps(dependent))
    ok(kube, "create", "-f", "-", stdin=json.dumps(bystander))

    ok(kube, "delete", "configmap", "owner", "-n", namespace, "--cascade=background")
    eventually(
        lambda: kubectl(kube, "get", "secret", "owned", "-n", namespace).returncode != 0,
        30,
        "garbage collection of the owned Secret",
    )
    assert kubectl(kube, "get", "secret", "unowned", "-n", namespace).returncode == 0


def test_namespace_deletion_completes(kube: dict[str, str]) -> None:
    require_controller_manager(kube)
    name = f"kube-api-doomed-{uuid.uuid4().hex[:6]}"
    ok(kube, "create", "namespace", name)
    ok(kube, "create", "configmap", "inside", "-n", name, "--from-literal=k=v")
    ok(kube, "delete", "namespace", name, "--wait=true", "--timeout=60s")
    assert kubectl(kube, "get", "namespace", name).returncode != 0


def test_stack_namespaces_and_crds_exist(kube: dict[str, str]) -> None:
    for name in ("llm-gateway", "demo"):
        assert get(kube, "namespace", name)["status"]["phase"] == "Active"
    crd_files = sorted((Path(__file__).resolve().parents[2] / "crds").glob("*.yaml"))
    established = {
        item["metadata"]["name"]
        for item in get(kube, "crd")["items"]
        if any(c["type"] == "Established" and c["status"] == "True" for c in item["status"]["conditions"])
    }
    for path in crd_files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                assert doc["metadata"]["name"] in established, f"{path.name} not Established"
