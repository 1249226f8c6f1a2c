"""Kubernetes API access for the benchmarks (kubernetes_asyncio): create tiers and users the way
`kubectl apply` does (one POST per object, without kubectl's process start-up in the measurement), and
watch Secrets / GatewayUsers so arrival times come from watch events, not from polling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION = "llmgateway.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_SECRETS = "app.kubernetes.io/managed-by=llm-gateway-operator"


def tier_body(name: str, *, budget: float, rpm: int, models: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GatewayTier",
        "metadata": {"name": name},
        "spec": {"monthlyBudgetUSD": budget, "rpmLimit": rpm, "models": models},
    }


def user_body(namespace: str, name: str, tier: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GatewayUser",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"email": f"{name}.{namespace}.{run}@bench.example.com", "tier": tier},
    }


def ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def is_ready(obj: dict[str, Any]) -> bool:
    condition = ready_condition(obj) or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return condition.get("status") == "True" and status.get("observedGeneration") == generation


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, kubeconfig: str) -> Kube:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        # Bulk creation runs many requests at once; the default pool of 4 would serialise them.
        configuration.connection_pool_maxsize = 64
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    # --- namespaces and tiers ---------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            await self.core.create_namespace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )

    async def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            await self.core.delete_namespace(name)

    async def create_tier(self, name: str, *, budget: float, rpm: int, models: list[str]) -> None:
        body = tier_body(name, budget=budget, rpm=rpm, models=models)
        try:
            await self.custom.create_cluster_custom_object(GROUP, VERSION, "gatewaytiers", body)
        except ApiException as error:
            if error.status != 409:
                raise
            await self.custom.patch_cluster_custom_object(
                GROUP,
                VERSION,
                "gatewaytiers",
                name,
                {"spec": body["spec"]},
                _content_type="application/merge-patch+json",  # a dict body defaults to JSON Patch
            )

    async def get_tier(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self.custom.get_cluster_custom_object(GROUP, VERSION, "gatewaytiers", name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def wait_tier_ready(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tier = await self.get_tier(name)
            condition = ready_condition(tier or {}) or {}
            if condition.get("status") == "True" and (tier or {}).get("status", {}).get("teamId"):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"GatewayTier {name} not Ready after {timeout:.0f}s: {tier}")

    async def delete_tier(self, name: str, wait: float = 0) -> None:
        with contextlib.suppress(ApiException):
            await self.custom.delete_cluster_custom_object(GROUP, VERSION, "gatewaytiers", name)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and await self.get_tier(name) is not None:
            await asyncio.sleep(0.5)

    # --- users ------------------------------------------------------------------------------------------

    async def create_user(self, namespace: str, name: str, tier: str, run: str) -> None:
        await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "gatewayusers", user_body(namespace, name, tier, run)
        )

    async def create_users(
        self, namespace: str, names: list[str], tier: str, run: str, concurrency: int = 32
    ) -> float:
        """Create every user as fast as the API server takes them; returns the seconds it took."""
        semaphore = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with semaphore:
                for attempt in range(5):
                    try:
                        await self.create_user(namespace, name, tier, run)
                        return
                    except ApiException as error:
                        if error.status == 409:
                            return
                        if error.status not in (429, 500, 503, 504) or attempt == 4:
                            raise
                        await asyncio.sleep(0.5 * (attempt + 1))

        started = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        return time.perf_counter() - started

    async def list_users(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            page = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "gatewayusers", **kwargs
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def count_all_users(self) -> int:
        """GatewayUsers in every namespace (what a clusterwide operator resumes after a restart)."""
        page = await self.custom.list_cluster_custom_object(GROUP, VERSION, "gatewayusers")
        return len(page.get("items") or [])

    async def delete_all_users(self, namespace: str, timeout: float) -> tuple[float, int]:
        """Delete every GatewayUser of the namespace and wait for the finalizers; (seconds, left over)."""
        started = time.perf_counter()
        with contextlib.suppress(ApiException):
            await self.custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, "gatewayusers"
            )
        deadline = time.monotonic() + timeout
        left = len(await self.list_users(namespace))
        while left and time.monotonic() < deadline:
            await asyncio.sleep(1)
            left = len(await self.list_users(namespace))
        return time.perf_counter() - started, left

    async def secret_keys(self, namespace: str) -> dict[str, str]:
        """Secret name -> api-key of every Secret the operator manages in the namespace (values stay in
        memory: they are hashed and compared, never printed)."""
        out: dict[str, str] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": MANAGED_SECRETS, "limit": 500}
            if token:
                kwargs["_continue"] = token
            page = await self.core.list_namespaced_secret(namespace, **kwargs)
            for item in page.items:
                raw = (item.data or {}).get("api-key")
                if raw:
                    out[item.metadata.name] = base64.b64decode(raw).decode()
            token = page.metadata._continue
            if not token:
                return out

    # --- watches ----------------------------------------------------------------------------------------

    def watch(
        self, kind: str, namespace: str, on_event: Callable[[str, dict[str, Any], float], None]
    ) -> Watcher:
        return Watcher(self, kind, namespace, on_event)


class Watcher:
    """Background watch of Secrets (label-selected) or GatewayUsers of one namespace. ``on_event(type,
    object, perf_counter)`` runs for every event; the watch resumes if the server closes it."""

    def __init__(
        self, kube: Kube, kind: str, namespace: str, on_event: Callable[[str, dict[str, Any], float], None]
    ) -> None:
        self.kube, self.kind, self.namespace, self.on_event = kube, kind, namespace, on_event
        self.started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.started.wait(), 30)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _list(self) -> tuple[list[dict[str, Any]], str]:
        if self.kind == "secrets":
            page = await self.kube.core.list_namespaced_secret(
                self.namespace, label_selector=MANAGED_SECRETS, _preload_content=False
            )
        else:
            page = await self.kube.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.kind, _preload_content=False
            )
        data = json.loads(await page.read())
        return list(data.get("items") or []), str(data["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        items, version = await self._list()
        now = time.perf_counter()
        for item in items:
            self.on_event("ADDED", item, now)
        self.started.set()
        while True:
            stream = watch.Watch(return_type="object")  # plain dicts: no model deserialisation
            try:
                if self.kind == "secrets":
                    source = stream.stream(
                        self.kube.core.list_namespaced_secret,
                        self.namespace,
                        label_selector=MANAGED_SECRETS,
                        resource_version=version,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                    )
                else:
                    source = stream.stream(
                        self.kube.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        self.kind,
                        resource_version=version,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                    )
                async for event in source:
                    obj = event["raw_object"] if isinstance(event, dict) else {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event["type"] == "BOOKMARK":
                        continue
                    self.on_event(str(event["type"]), obj, time.perf_counter())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a watch ends in many ways (410, read timeout, reset): resume
                if not (isinstance(error, ApiException) and error.status == 410):
                    await asyncio.sleep(0.5)
                # Expired resource version: list again; objects already seen are reported again.
                items, version = await self._list()
                now = time.perf_counter()
                for item in items:
                    self.on_event("MODIFIED", item, now)
            finally:
                stream.stop()
