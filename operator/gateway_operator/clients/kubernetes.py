"""Kubernetes access the services need: user Secrets, status patches of our custom objects, and the
rollout of Deployments that opted in to key rotation.

kubernetes_asyncio underneath; 404 becomes ``None`` (or ``False``), 409 becomes ``K8sConflict``, and
Secret data is decoded to ``str`` here so nothing above deals with base64. Secret values never reach
a log line or an exception message.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gateway_operator.models import GROUP, VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


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


def _wrap(what: str, error: ApiException) -> Exception:
    if error.status == 409:
        return K8sConflict(f"{what}: conflict")
    return K8sError(what, error.status, str(error.reason))


class KubernetesClient:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)

    @classmethod
    async def connect(cls) -> KubernetesClient:
        """In-cluster service account if present, else KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def aclose(self) -> None:
        await self._api.close()

    # --- Secrets --------------------------------------------------------------------------------------

    def _secret_view(self, obj: Any) -> SecretView:
        raw = self._api.sanitize_for_serialization(obj)
        meta = raw.get("metadata", {})
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

    async def get_secret(self, namespace: str, name: str) -> SecretView | None:
        try:
            obj = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _wrap(f"read Secret {namespace}/{name}", error) from None
        return self._secret_view(obj)

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
        try:
            obj = await self._core.create_namespaced_secret(namespace, cast(Any, body))
        except ApiException as error:
            raise _wrap(f"create Secret {namespace}/{name}", error) from None
        return self._secret_view(obj)

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
        try:
            obj = await self._core.replace_namespaced_secret(current.name, current.namespace, cast(Any, body))
        except ApiException as error:
            raise _wrap(f"replace Secret {current.namespace}/{current.name}", error) from None
        return self._secret_view(obj)

    async def delete_secret(self, namespace: str, name: str, uid: str | None = None) -> bool:
        body: dict[str, Any] = {}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._core.delete_namespaced_secret(name, namespace, body=cast(Any, body))
        except ApiException as error:
            if error.status == 404:
                return False
            raise _wrap(f"delete Secret {namespace}/{name}", error) from None
        return True

    # --- Deployments --------------------------------------------------------------------------------

    async def list_deployments(self, namespace: str) -> list[DeploymentView]:
        try:
            result = await self._apps.list_namespaced_deployment(namespace)
        except ApiException as error:
            raise _wrap(f"list Deployments in {namespace}", error) from None
        views = []
        for item in self._api.sanitize_for_serialization(result).get("items", []):
            meta = item.get("metadata", {})
            template = item.get("spec", {}).get("template", {}).get("metadata", {})
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
        options: dict[str, Any] = {"_content_type": MERGE_PATCH}
        try:
            await self._apps.patch_namespaced_deployment(name, namespace, body, **options)
        except ApiException as error:
            if error.status == 404:
                return False
            raise _wrap(f"patch Deployment {namespace}/{name}", error) from None
        return True

    # --- custom objects -------------------------------------------------------------------------------

    async def get_object(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            if namespace is None:
                obj = await self._custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            else:
                obj = await self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise _wrap(f"read {plural} {name}", error) from None
        return dict(obj)

    async def patch_status(
        self, plural: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> bool:
        """Merge-patch ``status``; False if the object is gone."""
        body = {"status": dict(status)}
        # The generated client would pick json-patch for a dict body; CRDs need a merge patch.
        options: dict[str, Any] = {"_content_type": MERGE_PATCH}
        try:
            if namespace is None:
                await self._custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, body, **options
                )
            else:
                await self._custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body, **options
                )
        except ApiException as error:
            if error.status == 404:
                return False
            raise _wrap(f"patch status of {plural} {name}", error) from None
        return True
