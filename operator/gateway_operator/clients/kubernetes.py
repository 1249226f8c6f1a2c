"""Kubernetes access the services need: user Secrets, status patches of our custom objects, and the
rollout of Deployments that opted in to key rotation.

Plain JSON over httpx (no generated client: kubernetes_asyncio's ~700 model classes cost the operator
~75 MiB of RSS and seconds of start-up for the handful of calls made here). Credentials come from
kopf's own login functions (service account first, then kubeconfig), so the operator and kopf talk
to the same server as the same identity.

404 becomes ``None`` (or ``False``), 409 becomes ``K8sConflict``, any other failure ``K8sError``
(transport errors included, with ``status=None``), and Secret data is decoded to ``str`` here so
nothing above deals with base64. Secret values never reach a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import kopf

from gateway_operator.models import GROUP, VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# The kubelet rotates a projected service-account token well before it expires (client-go re-reads
# the file every minute, too); re-reading a kubeconfig this often is just as cheap.
RELOGIN_SECONDS = 60.0
# No pool timeout: in a burst (1,000 users applied at once) hundreds of reconciles queue for the
# connections, and with a loaded API server the wait alone can exceed any fixed bound (the lean client
# failed with PoolTimeout at 20 connections and a 30 s pool timeout). Each request is bounded by the
# read timeout, so a connection always comes back; the queue is the back-pressure.
TIMEOUT = httpx.Timeout(30.0, connect=10.0, pool=None)
# Few connections, all kept alive: each TLS connection costs ~300 KiB (asyncio's 256 KiB read buffer +
# OpenSSL), a closed one a fresh handshake, and httpcore's per-request bookkeeping grows with requests x
# connections. `python -m tests.bench.kube_pool`: 1,000 concurrent GETs cost 4.3 ms CPU per request with 8
# connections behind the gate, 5.0 with 32 (6.7 with 32 and no gate), and are no slower in wall time.
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8)
# Requests wait for a connection here, not in httpcore's pool: httpcore re-scans its whole queue of
# waiting requests whenever a connection frees up, which is O(queue) per request and O(N^2) over a burst.
IN_FLIGHT = LIMITS.max_connections or 8

Login = Callable[[], "kopf.ConnectionInfo | None"]


class K8sConflict(Exception):
    """The object changed or already exists (HTTP 409); re-read and retry."""


class K8sError(Exception):
    def __init__(self, what: str, status: int | None, reason: str):
        self.status = status
        super().__init__(f"Kubernetes {what} failed: {status} {reason}")


@dataclass(frozen=True)
class SecretView:
    name: str
    namespace: str
    uid: str
    resource_version: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_references: tuple[dict[str, Any], ...] = ()
    data: dict[str, str] = field(default_factory=dict, repr=False)
    deleting: bool = False
    created: str = ""  # metadata.creationTimestamp


@dataclass(frozen=True)
class DeploymentView:
    name: str
    namespace: str
    annotations: dict[str, str] = field(default_factory=dict)
    template_annotations: dict[str, str] = field(default_factory=dict)


def _decode(data: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""
    return out


def _encode(data: Mapping[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}


def _secret_view(raw: Mapping[str, Any]) -> SecretView:
    meta = raw.get("metadata") or {}
    return SecretView(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        owner_references=tuple(meta.get("ownerReferences") or ()),
        data=_decode(raw.get("data")),
        deleting=bool(meta.get("deletionTimestamp")),
        created=str(meta.get("creationTimestamp") or ""),
    )


def _seg(value: str) -> str:
    return quote(value, safe="")


def _secret_path(namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{_seg(namespace)}/secrets"
    return f"{path}/{_seg(name)}" if name is not None else path


def _deployment_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/apps/v1/namespaces/{_seg(namespace)}/deployments"
    return f"{path}/{_seg(name)}" if name is not None else path


def _object_path(plural: str, name: str, namespace: str | None) -> str:
    scope = f"/namespaces/{_seg(namespace)}" if namespace is not None else ""
    return f"/apis/{GROUP}/{VERSION}{scope}/{_seg(plural)}/{_seg(name)}"


def default_login(settings: kopf.OperatorSettings | None = None) -> Login:
    """kopf's own fallbacks, in kopf's order of priority: the pod's service account, then kubeconfig."""
    settings = settings or kopf.OperatorSettings()

    def login() -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )

    return login


class KubernetesClient:
    def __init__(
        self,
        info: kopf.ConnectionInfo,
        *,
        login: Login | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._login = login
        self._headers = info.as_http_headers()
        self._logged_in = time.monotonic()
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._http = httpx.AsyncClient(
            base_url=info.server.rstrip("/"),
            verify=info.as_ssl_context() if info.server.startswith("https:") else False,
            proxy=info.proxy_url or None,
            trust_env=info.trust_env,
            timeout=TIMEOUT,
            transport=transport,
            headers={"Accept": "application/json"},
            limits=LIMITS,
        )

    @classmethod
    async def connect(cls, settings: kopf.OperatorSettings | None = None) -> KubernetesClient:
        """In-cluster service account if present, else KUBECONFIG / ~/.kube/config (kopf's logins)."""
        login = default_login(settings)
        info = login()
        if info is None:
            raise K8sError("login", None, "no service account token and no kubeconfig found")
        log.debug("Kubernetes API at %s", info.server)
        return cls(info, login=login)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ------------------------------------------------------------------------------------

    def _relogin(self) -> None:
        """Re-read the credentials (a rotated service-account token, a refreshed kubeconfig token).
        Only the Authorization header follows; server and TLS material stay as at start-up."""
        self._logged_in = time.monotonic()
        if self._login is None:
            return
        try:
            info = self._login()
        except Exception as error:  # a half-written kubeconfig: keep the old token, try again later
            log.warning(
                "Kubernetes re-login failed (%s); keeping the current credentials", type(error).__name__
            )
            return
        if info is not None:
            self._headers = info.as_http_headers()

    async def _send(
        self, what: str, method: str, path: str, content_type: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        if time.monotonic() - self._logged_in > RELOGIN_SECONDS:
            self._relogin()
        for attempt in (1, 2):
            headers = {**self._headers, "Content-Type": content_type} if content_type else self._headers
            try:
                async with self._in_flight:
                    response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as error:
                raise K8sError(what, None, type(error).__name__) from None
            if response.status_code == 401 and attempt == 1 and self._login is not None:
                self._relogin()  # the token expired under us: once more with a fresh one
                continue
            return response
        raise AssertionError("unreachable")

    async def _call(
        self, what: str, method: str, path: str, content_type: str | None = None, **kwargs: Any
    ) -> httpx.Response | None:
        """The response if 2xx, ``None`` on 404; 409 -> K8sConflict, anything else -> K8sError."""
        response = await self._send(what, method, path, content_type, **kwargs)
        if response.is_success:
            return response
        if response.status_code == 404:
            return None
        if response.status_code == 409:
            raise K8sConflict(f"{what}: conflict")
        raise K8sError(what, response.status_code, response.reason_phrase)

    async def _json(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        response = await self._call(what, method, path, **kwargs)
        if response is None:
            return None
        try:
            body = response.json()
        except ValueError:
            raise K8sError(what, response.status_code, "response is not JSON") from None
        if not isinstance(body, dict):
            raise K8sError(what, response.status_code, "response is not a JSON object")
        return body

    async def _merge_patch(self, what: str, path: str, body: Mapping[str, Any]) -> bool:
        # A merge patch: the JSON-patch default of the generated clients does not fit a dict body.
        response = await self._call(what, "PATCH", path, MERGE_PATCH, json=dict(body))
        return response is not None

    # --- Secrets --------------------------------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> SecretView | None:
        raw = await self._json(f"read Secret {namespace}/{name}", "GET", _secret_path(namespace, name))
        return None if raw is None else _secret_view(raw)

    async def create_secret(
        self,
        namespace: str,
        name: str,
        *,
        data: Mapping[str, str],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        owner_references: list[dict[str, Any]],
    ) -> SecretView:
        what = f"create Secret {namespace}/{name}"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels),
                "annotations": dict(annotations),
                "ownerReferences": owner_references,
            },
            "data": _encode(data),
        }
        raw = await self._json(what, "POST", _secret_path(namespace), json=body)
        if raw is None:  # the namespace is gone
            raise K8sError(what, 404, "Not Found")
        return _secret_view(raw)

    async def replace_secret(
        self,
        current: SecretView,
        *,
        data: Mapping[str, str],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        owner_references: list[dict[str, Any]],
    ) -> SecretView:
        """Full replace guarded by resourceVersion (409 if someone changed it meanwhile)."""
        what = f"replace Secret {current.namespace}/{current.name}"
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": current.name,
                "namespace": current.namespace,
                "resourceVersion": current.resource_version,
                "labels": {**current.labels, **labels},
                "annotations": {**current.annotations, **annotations},
                "ownerReferences": owner_references,
            },
            "data": _encode(data),
        }
        raw = await self._json(what, "PUT", _secret_path(current.namespace, current.name), json=body)
        if raw is None:  # deleted meanwhile
            raise K8sError(what, 404, "Not Found")
        return _secret_view(raw)

    async def delete_secret(self, namespace: str, name: str, uid: str | None = None) -> bool:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        response = await self._call(
            f"delete Secret {namespace}/{name}", "DELETE", _secret_path(namespace, name), json=body
        )
        return response is not None

    # --- Deployments --------------------------------------------------------------------------------

    async def list_deployments(self, namespace: str) -> list[DeploymentView]:
        what = f"list Deployments in {namespace}"
        raw = await self._json(what, "GET", _deployment_path(namespace))
        if raw is None:
            raise K8sError(what, 404, "Not Found")
        views = []
        for item in raw.get("items") or []:
            meta = item.get("metadata") or {}
            template = ((item.get("spec") or {}).get("template") or {}).get("metadata") or {}
            views.append(
                DeploymentView(
                    name=meta.get("name", ""),
                    namespace=meta.get("namespace", namespace),
                    annotations=dict(meta.get("annotations") or {}),
                    template_annotations=dict(template.get("annotations") or {}),
                )
            )
        return views

    async def patch_pod_template_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> bool:
        """What `kubectl rollout restart` does: a changed pod-template annotation rolls the pods.
        False if the Deployment is gone."""
        body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
        return await self._merge_patch(
            f"patch Deployment {namespace}/{name}", _deployment_path(namespace, name), body
        )

    # --- custom objects -------------------------------------------------------------------------------

    async def get_kopf_peering(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """kopf's peering object: ClusterKopfPeering (cluster-wide) or KopfPeering in ``namespace``."""
        if namespace is None:
            path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{_seg(name)}"
        else:
            path = f"/apis/kopf.dev/v1/namespaces/{_seg(namespace)}/kopfpeerings/{_seg(name)}"
        return await self._json(f"read kopf peering {name}", "GET", path)

    async def get_object(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return await self._json(f"read {plural} {name}", "GET", _object_path(plural, name, namespace))

    async def patch_status(
        self, plural: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> bool:
        """Merge-patch ``status``; False if the object is gone."""
        return await self._merge_patch(
            f"patch status of {plural} {name}",
            _object_path(plural, name, namespace) + "/status",
            {"status": dict(status)},
        )
