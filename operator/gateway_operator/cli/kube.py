"""Kubernetes access for the CLI: the current kubeconfig context (or in-cluster config), GatewayTier and
GatewayUser reads, and idempotent applies (compare first, server-side apply only what differs)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from gateway_operator.cli.errors import CliError, UnavailableError
from gateway_operator.cli.manifests import object_ref
from gateway_operator.cli.views import parse_time
from gateway_operator.models import GROUP, TIER_KIND, TIER_PLURAL, USER_KIND, USER_PLURAL, VERSION

FIELD_MANAGER = "gatewayctl"
ApplyResult = Literal["created", "updated", "unchanged"]
_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _plural(kind: str) -> str:
    return {TIER_KIND: TIER_PLURAL, USER_KIND: USER_PLURAL}[kind]


def api_error(error: ApiException, obj: str, action: str) -> CliError:
    """One line from an API server error response (its own message names the field)."""
    message = error.reason or "error"
    try:
        import json

        body = json.loads(error.body or "{}")
        message = body.get("message") or message
    except (ValueError, TypeError):
        pass
    if error.status == 401:
        return UnavailableError(
            "unauthorized by the Kubernetes API", obj=obj, fix="refresh your kubeconfig credentials"
        )
    if error.status == 403:
        return CliError(
            f"forbidden to {action}: {message}", obj=obj, fix="ask a cluster admin for RBAC on llmgateway.io"
        )
    if error.status == 404 and "the server could not find the requested resource" in message:
        return CliError(
            "the llmgateway.io CRDs are not installed in this cluster",
            obj=obj,
            fix="kubectl apply -f crds/ (or install the Helm chart)",
        )
    if error.status == 404 and message.startswith("namespaces "):
        return CliError(f"cannot {action}: {message}", obj=obj, fix="create it with kubectl create namespace")
    return CliError(f"cannot {action}: {message}", obj=obj)


@dataclass
class Kube:
    api: client.ApiClient
    namespace: str  # the context's namespace, "default" when it names none
    host: str

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def list_tiers(self) -> list[dict[str, Any]]:
        try:
            result = await self.custom.list_cluster_custom_object(GROUP, VERSION, TIER_PLURAL)
        except ApiException as error:
            raise api_error(error, "gatewaytiers", "list tiers") from error
        return _items(result)

    async def list_users(self, namespace: str | None) -> list[dict[str, Any]]:
        try:
            if namespace is None:
                result = await self.custom.list_cluster_custom_object(GROUP, VERSION, USER_PLURAL)
            else:
                result = await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, USER_PLURAL
                )
        except ApiException as error:
            raise api_error(
                error, f"gatewayusers in {namespace or 'all namespaces'}", "list users"
            ) from error
        return _items(result)

    async def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            if namespace is None:
                found = await self.custom.get_cluster_custom_object(GROUP, VERSION, _plural(kind), name)
            else:
                found = await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, _plural(kind), name
                )
        except ApiException as error:
            if error.status == 404 and "could not find the requested resource" not in (error.body or ""):
                return None
            raise api_error(error, f"{kind}/{name}", "read") from error
        return dict(found)

    async def apply(self, obj: dict[str, Any], existing: dict[str, Any] | bool | None = True) -> ApplyResult:
        """Server-side apply `obj` unless the cluster already has it as written: re-runs make no writes.

        `existing` is the object as listed beforehand (None: known absent); True means fetch it now."""
        return (await self.apply_generation(obj, existing))[0]

    async def apply_generation(
        self, obj: dict[str, Any], existing: dict[str, Any] | bool | None = True
    ) -> tuple[ApplyResult, int | None]:
        """`apply`, plus metadata.generation of the object as applied (to wait for that generation)."""
        kind = obj["kind"]
        meta = obj["metadata"]
        namespace = meta.get("namespace") if kind == USER_KIND else None
        current = await self.get(kind, meta["name"], namespace) if existing is True else existing
        if isinstance(current, dict) and up_to_date(current, obj):
            return "unchanged", (current.get("metadata") or {}).get("generation")
        plural = _plural(kind)
        kwargs: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        try:
            if namespace is None:
                applied = await self.custom.patch_cluster_custom_object(
                    GROUP, VERSION, plural, meta["name"], obj, **kwargs
                )
            else:
                applied = await self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, meta["name"], obj, **kwargs
                )
        except ApiException as error:
            raise api_error(error, object_ref(obj), "apply") from error
        generation = ((applied or {}).get("metadata") or {}).get("generation")
        return ("created" if not isinstance(current, dict) else "updated"), generation

    async def crd_installed(self, plural: str) -> bool:
        try:
            await client.ApiextensionsV1Api(self.api).read_custom_resource_definition(f"{plural}.{GROUP}")
        except ApiException as error:
            if error.status == 404:
                return False
            raise api_error(error, f"crd/{plural}.{GROUP}", "read CRDs") from error
        return True

    async def secret_creation_times(self, namespace: str | None) -> dict[tuple[str, str], datetime]:
        """(namespace, name) -> creationTimestamp of the Secrets, reading metadata only (never key values)."""
        path = f"/api/v1/namespaces/{namespace}/secrets" if namespace else "/api/v1/secrets"
        try:
            body = await self.api.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException:
            return {}  # no RBAC on Secrets: key age stays unknown
        times: dict[tuple[str, str], datetime] = {}
        for item in (body or {}).get("items") or []:
            meta = item.get("metadata") or {}
            created = parse_time(meta.get("creationTimestamp"))
            if created is not None:
                times[(meta.get("namespace", ""), meta.get("name", ""))] = created
        return times

    async def list_deployments(self, label_selector: str) -> list[Any]:
        try:
            result = await client.AppsV1Api(self.api).list_deployment_for_all_namespaces(
                label_selector=label_selector
            )
        except ApiException as error:
            if error.status in (403, 404):
                return []
            raise api_error(error, "deployments", "list deployments") from error
        return list(result.items)


def _items(result: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in (result or {}).get("items", [])]


def up_to_date(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """The cluster's object already says what `desired` says, and holds no spec field that an earlier
    apply of ours set and `desired` has since dropped (server-side apply would remove it)."""
    if not _contains(current, desired):
        return False
    ours = set()
    for entry in (current.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            spec_fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            ours |= {key.removeprefix("f:") for key in spec_fields if key.startswith("f:")}
    return ours <= set((desired.get("spec") or {}).keys())


def _contains(actual: Any, wanted: Any) -> bool:
    """Every field of `wanted` is present in `actual` with the same value (lists compared whole)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, float) or isinstance(actual, float):
        return isinstance(actual, int | float) and float(actual) == float(wanted)
    return bool(actual == wanted)


@asynccontextmanager
async def connect(context: str | None = None) -> AsyncIterator[Kube]:
    """The current kubeconfig context (KUBECONFIG or ~/.kube/config), else the in-cluster service account."""
    configuration = client.Configuration()
    namespace = "default"
    try:
        kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        first = kubeconfig.split(os.pathsep)[0]
        if context is None and not Path(first).exists() and _IN_CLUSTER_TOKEN.exists():
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        elif not Path(first).is_file():
            raise FileNotFoundError(f"no kubeconfig at {first}")
        else:
            loader = await config.load_kube_config(  # KUBECONFIG may list several files; they are merged
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            namespace = (loader.current_context or {}).get("context", {}).get("namespace") or "default"
    except (ConfigException, FileNotFoundError, OSError) as error:
        raise UnavailableError(
            f"no usable Kubernetes configuration ({error})",
            fix="set KUBECONFIG or select a context with kubectl config use-context",
        ) from error
    api = client.ApiClient(configuration)
    try:
        yield Kube(api, namespace, str(configuration.host))
    except aiohttp.ClientError as error:
        raise UnavailableError(
            f"cannot reach the Kubernetes API at {configuration.host} ({error.__class__.__name__})",
            fix="check the kubeconfig context and that the cluster is up",
        ) from error
    finally:
        await api.close()
