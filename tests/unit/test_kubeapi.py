"""The operator's lean Kubernetes client (clients/kubernetes.py) against a fake API server (an
httpx.MockTransport that records requests and answers like kube-apiserver): request shapes, the
mapping of HTTP errors to domain errors, credentials from kopf's login and their refresh."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from gateway_operator.clients import kubernetes as k8s
from gateway_operator.clients.kubernetes import K8sConflict, K8sError, KubernetesClient, SecretView

SERVER = "http://k8s.test"
VALUE = "sk-test-value-never-in-messages-0123"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def status(code: int, reason: str, message: str = "") -> httpx.Response:
    return httpx.Response(
        code,
        json={
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "code": code,
            "message": message,
        },
    )


def secret_body(name: str = "alice-llm", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": "uid-1",
            "resourceVersion": "41",
            "creationTimestamp": "2026-11-28T22:00:00Z",
            "labels": {"app": "x"},
            "annotations": {"a": "1"},
            "ownerReferences": [{"kind": "GatewayUser", "name": "alice", "uid": "u-alice"}],
            **meta,
        },
        "type": "Opaque",
        "data": {"OPENAI_API_KEY": b64(VALUE), "broken": "%%%"},
    }


class FakeApiServer:
    """Records every request; answers with the next scripted response (or a handler)."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def client(api: FakeApiServer, token: str = "tok-1", login: k8s.Login | None = None) -> KubernetesClient:
    info = kopf.ConnectionInfo(server=SERVER, token=token)
    return KubernetesClient(info, login=login, transport=httpx.MockTransport(api))


# --- Secrets --------------------------------------------------------------------------------------------


async def test_get_secret_decodes_data_and_metadata() -> None:
    api = FakeApiServer(httpx.Response(200, json=secret_body()))
    secret = await client(api).get_secret("team-a", "alice-llm")

    request = api.requests[0]
    assert (request.method, request.url.path) == ("GET", "/api/v1/namespaces/team-a/secrets/alice-llm")
    assert request.headers["authorization"] == "Bearer tok-1"
    assert secret == SecretView(
        name="alice-llm",
        namespace="team-a",
        uid="uid-1",
        resource_version="41",
        labels={"app": "x"},
        annotations={"a": "1"},
        owner_references=({"kind": "GatewayUser", "name": "alice", "uid": "u-alice"},),
        data={"OPENAI_API_KEY": VALUE, "broken": ""},
        created="2026-11-28T22:00:00Z",
    )
    assert VALUE not in repr(secret)


async def test_get_secret_404_is_none_and_deleting_is_seen() -> None:
    api = FakeApiServer(
        status(404, "NotFound", 'secrets "gone" not found'),
        httpx.Response(200, json=secret_body(deletionTimestamp="2026-11-28T22:01:00Z")),
    )
    kube = client(api)
    assert await kube.get_secret("team-a", "gone") is None
    secret = await kube.get_secret("team-a", "alice-llm")
    assert secret is not None and secret.deleting


async def test_create_secret_posts_base64_data_with_owner() -> None:
    api = FakeApiServer(lambda request: httpx.Response(201, json=json.loads(request.content)))
    owner = [{"apiVersion": "llmgateway.io/v1alpha1", "kind": "GatewayUser", "name": "alice", "uid": "u"}]
    secret = await client(api).create_secret(
        "team-a",
        "alice-llm",
        data={"OPENAI_API_KEY": VALUE},
        labels={"l": "1"},
        annotations={"a": "2"},
        owner_references=owner,
    )
    request = api.requests[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/namespaces/team-a/secrets")
    body = api.body()
    assert body["data"] == {"OPENAI_API_KEY": b64(VALUE)}
    assert body["metadata"] == {
        "name": "alice-llm",
        "namespace": "team-a",
        "labels": {"l": "1"},
        "annotations": {"a": "2"},
        "ownerReferences": owner,
    }
    assert (body["kind"], body["type"]) == ("Secret", "Opaque")
    assert secret.data == {"OPENAI_API_KEY": VALUE}


async def test_create_existing_secret_is_a_conflict_without_the_value() -> None:
    api = FakeApiServer(status(409, "AlreadyExists", 'secrets "alice-llm" already exists'))
    with pytest.raises(K8sConflict) as caught:
        await client(api).create_secret(
            "team-a", "alice-llm", data={"k": VALUE}, labels={}, annotations={}, owner_references=[]
        )
    assert "create Secret team-a/alice-llm" in str(caught.value)
    assert VALUE not in str(caught.value) and b64(VALUE) not in str(caught.value)


async def test_create_rejected_secret_is_a_k8s_error_with_status_and_no_value() -> None:
    api = FakeApiServer(status(422, "Invalid", f"data[k]: Invalid value: {b64(VALUE)}"))
    with pytest.raises(K8sError) as caught:
        await client(api).create_secret(
            "team-a", "bad", data={"k": VALUE}, labels={}, annotations={}, owner_references=[]
        )
    assert caught.value.status == 422
    assert str(caught.value) == "Kubernetes create Secret team-a/bad failed: 422 Unprocessable Entity"


async def test_replace_secret_is_guarded_by_resource_version_and_merges_metadata() -> None:
    current = k8s._secret_view(secret_body())
    api = FakeApiServer(
        lambda request: httpx.Response(200, json=json.loads(request.content)),
        status(409, "Conflict", "the object has been modified"),
    )
    kube = client(api)
    replaced = await kube.replace_secret(
        current, data={"NEW": "v"}, labels={"l": "2"}, annotations={"a": "3"}, owner_references=[]
    )
    request = api.requests[0]
    assert (request.method, request.url.path) == ("PUT", "/api/v1/namespaces/team-a/secrets/alice-llm")
    meta = api.body(0)["metadata"]
    assert meta["resourceVersion"] == "41"
    assert meta["labels"] == {"app": "x", "l": "2"}
    assert meta["annotations"] == {"a": "3"}
    assert api.body(0)["data"] == {"NEW": b64("v")}
    assert replaced.data == {"NEW": "v"}
    with pytest.raises(K8sConflict):
        await kube.replace_secret(current, data={}, labels={}, annotations={}, owner_references=[])


async def test_replace_of_a_vanished_secret_is_an_error() -> None:
    current = k8s._secret_view(secret_body())
    api = FakeApiServer(status(404, "NotFound"))
    with pytest.raises(K8sError) as caught:
        await client(api).replace_secret(current, data={}, labels={}, annotations={}, owner_references=[])
    assert caught.value.status == 404


async def test_delete_secret_with_uid_precondition() -> None:
    api = FakeApiServer(
        httpx.Response(200, json={"kind": "Status", "status": "Success"}),
        status(404, "NotFound"),
        status(409, "Conflict", "Precondition failed: UID in precondition: x, UID in object meta: y"),
    )
    kube = client(api)
    assert await kube.delete_secret("team-a", "alice-llm", uid="uid-1") is True
    assert api.requests[0].method == "DELETE"
    assert api.requests[0].url.path == "/api/v1/namespaces/team-a/secrets/alice-llm"
    assert api.body(0)["preconditions"] == {"uid": "uid-1"}
    assert await kube.delete_secret("team-a", "gone") is False
    assert "preconditions" not in api.body(1)
    with pytest.raises(K8sConflict):
        await kube.delete_secret("team-a", "alice-llm", uid="other")


# --- custom objects and Deployments ---------------------------------------------------------------------


async def test_patch_status_is_a_merge_patch_on_the_status_subresource() -> None:
    api = FakeApiServer(httpx.Response(200, json={}), httpx.Response(200, json={}), status(404, "NotFound"))
    kube = client(api)
    assert await kube.patch_status("gatewaytiers", "gold", None, {"users": 3}) is True
    assert await kube.patch_status("gatewayusers", "alice", "team-a", {"phase": "Ready"}) is True
    assert await kube.patch_status("gatewayusers", "gone", "team-a", {"phase": "Ready"}) is False

    cluster, namespaced = api.requests[0], api.requests[1]
    assert cluster.method == "PATCH"
    assert cluster.url.path == "/apis/llmgateway.io/v1alpha1/gatewaytiers/gold/status"
    assert namespaced.url.path == "/apis/llmgateway.io/v1alpha1/namespaces/team-a/gatewayusers/alice/status"
    assert cluster.headers["content-type"] == "application/merge-patch+json"
    assert api.body(0) == {"status": {"users": 3}}


async def test_patch_status_forbidden_is_a_k8s_error() -> None:
    api = FakeApiServer(status(403, "Forbidden", "cannot patch"))
    with pytest.raises(K8sError) as caught:
        await client(api).patch_status("gatewaytiers", "gold", None, {"users": 1})
    assert caught.value.status == 403
    assert "patch status of gatewaytiers gold" in str(caught.value)


async def test_get_object_returns_the_body_or_none() -> None:
    body = {"apiVersion": "llmgateway.io/v1alpha1", "kind": "GatewayUser", "metadata": {"name": "alice"}}
    api = FakeApiServer(httpx.Response(200, json=body), status(404, "NotFound"))
    kube = client(api)
    assert await kube.get_object("gatewayusers", "alice", "team-a") == body
    assert api.requests[0].url.path == "/apis/llmgateway.io/v1alpha1/namespaces/team-a/gatewayusers/alice"
    assert await kube.get_object("gatewaytiers", "gone") is None
    assert api.requests[1].url.path == "/apis/llmgateway.io/v1alpha1/gatewaytiers/gone"


async def test_deployments_list_and_rollout_patch() -> None:
    items = {
        "items": [
            {
                "metadata": {"name": "app", "namespace": "team-a", "annotations": {"opt": "in"}},
                "spec": {"template": {"metadata": {"annotations": {"restartedAt": "t0"}}}},
            },
            {"metadata": {"name": "bare"}, "spec": {"template": {}}},
        ]
    }
    api = FakeApiServer(
        httpx.Response(200, json=items), httpx.Response(200, json={}), status(404, "NotFound")
    )
    kube = client(api)
    views = await kube.list_deployments("team-a")
    assert api.requests[0].url.path == "/apis/apps/v1/namespaces/team-a/deployments"
    assert views == [
        k8s.DeploymentView("app", "team-a", {"opt": "in"}, {"restartedAt": "t0"}),
        k8s.DeploymentView("bare", "team-a", {}, {}),
    ]
    assert await kube.patch_pod_template_annotations("team-a", "app", {"restartedAt": "t1"}) is True
    patch = api.requests[1]
    assert (patch.method, patch.url.path) == ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/app")
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert api.body(1) == {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "t1"}}}}}
    assert await kube.patch_pod_template_annotations("team-a", "gone", {"x": "y"}) is False


async def test_transport_errors_and_garbage_are_k8s_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    api = FakeApiServer(refuse, httpx.Response(200, text="<html>proxy</html>"))
    kube = client(api)
    with pytest.raises(K8sError) as caught:
        await kube.get_secret("team-a", "alice-llm")
    assert caught.value.status is None and "ConnectError" in str(caught.value)
    with pytest.raises(K8sError, match="not JSON"):
        await kube.get_object("gatewaytiers", "gold")


# --- credentials ----------------------------------------------------------------------------------------


async def test_an_expired_token_is_refreshed_once_and_the_call_retried() -> None:
    tokens = iter(["tok-2", "tok-3"])

    def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=SERVER, token=next(tokens))

    api = FakeApiServer(
        status(401, "Unauthorized"),
        httpx.Response(200, json=secret_body()),
        status(401, "Unauthorized"),
        status(401, "Unauthorized"),
    )
    kube = client(api, login=login)
    assert await kube.get_secret("team-a", "alice-llm") is not None
    assert [r.headers["authorization"] for r in api.requests] == ["Bearer tok-1", "Bearer tok-2"]
    with pytest.raises(K8sError) as caught:
        await kube.get_secret("team-a", "alice-llm")
    assert caught.value.status == 401
    assert [r.headers["authorization"] for r in api.requests[2:]] == ["Bearer tok-2", "Bearer tok-3"]


async def test_credentials_are_reread_periodically_and_a_failed_reread_keeps_the_old_ones() -> None:
    answers: list[object] = [kopf.ConnectionInfo(server=SERVER, token="rotated"), OSError("half-written")]

    def login() -> kopf.ConnectionInfo:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, kopf.ConnectionInfo)
        return answer

    api = FakeApiServer(*(httpx.Response(200, json=secret_body()) for _ in range(4)))
    kube = client(api, login=login)
    await kube.get_secret("team-a", "a")
    kube._logged_in -= k8s.RELOGIN_SECONDS + 1
    await kube.get_secret("team-a", "a")
    await kube.get_secret("team-a", "a")  # fresh: no re-read
    kube._logged_in -= k8s.RELOGIN_SECONDS + 1
    await kube.get_secret("team-a", "a")  # the re-read fails: the token in hand is kept
    assert [r.headers["authorization"] for r in api.requests] == [
        "Bearer tok-1",
        "Bearer rotated",
        "Bearer rotated",
        "Bearer rotated",
    ]
    assert answers == []


async def test_connect_logs_in_like_kopf_from_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1/"}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)  # not in a pod

    kube = await KubernetesClient.connect()
    try:
        assert kube._headers == {"Authorization": "Bearer kubeconfig-token"}
        assert str(kube._http.base_url) == "http://127.0.0.1:1"
        with pytest.raises(K8sError) as caught:  # nothing listens on port 1
            await kube.get_secret("team-a", "x")
        assert caught.value.status is None
    finally:
        await kube.aclose()


async def test_connect_without_any_credentials_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setattr(kopf, "login_with_kubeconfig", lambda **_: None)
    with pytest.raises(K8sError, match="no service account token and no kubeconfig"):
        await KubernetesClient.connect()


def test_a_burst_queues_for_connections_instead_of_failing() -> None:
    # 1,000 users at once once failed with PoolTimeout: waiting for a connection must not time out.
    assert k8s.TIMEOUT.pool is None
    assert k8s.TIMEOUT.read is not None and k8s.TIMEOUT.connect is not None


def test_the_operator_process_loads_no_kubernetes_client_library() -> None:
    # kubernetes_asyncio costs the operator ~75 MiB of RSS (kopf imports it if it can): the operator's
    # modules must import without it, and hiding it must leave kopf on its built-in login.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gateway_operator.__main__ import hide_client_libraries\n"
        "hide_client_libraries()\n"
        "import kopf, gateway_operator.handlers\n"
        "from kopf._core.intents import piggybacking\n"
        "assert not piggybacking.has_client() and not piggybacking.has_pykube()\n"
        "names = ('kubernetes', 'pykube', 'rich')\n"
        "print([m for m in sys.modules if m.startswith(names) and sys.modules[m]])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


async def test_requests_queue_in_the_client_not_in_the_connection_pool() -> None:
    """A burst never puts more than IN_FLIGHT requests into httpx at once (httpcore's queue is O(N) per
    request); the rest wait their turn and all complete."""
    import asyncio

    in_flight = peak = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return httpx.Response(200, json={"kind": "GatewayUser"})

    info = kopf.ConnectionInfo(server=SERVER, token="tok-1")
    kube = KubernetesClient(info, transport=httpx.MockTransport(answer))
    results = await asyncio.gather(
        *(kube.get_object("gatewayusers", f"u{i}", "ns") for i in range(5 * k8s.IN_FLIGHT))
    )
    assert all(r == {"kind": "GatewayUser"} for r in results)
    assert peak == k8s.IN_FLIGHT
