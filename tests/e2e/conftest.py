"""End-to-end fixtures: users are created the admin's way (kubectl apply of GatewayTier/GatewayUser YAML),
their keys read from the Secrets the operator wrote, and every call goes through the gateway URL.

Works against the local stack (default) and against any cluster whose KUBECONFIG and LLM_GATEWAY_URL
are set in the environment with LLMGW_E2E_EXTERNAL=1 (the kind run, through a port-forward)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.stack import kubectl as k
from tests.stack.common import REPO_ROOT

STANDARD_TIERS = REPO_ROOT / "manifests" / "tiers.yaml"


@dataclass(frozen=True)
class GatewayUserHandle:
    name: str
    namespace: str
    email: str
    api_key: str
    base_url: str
    obj: dict[str, Any]

    def refresh(self) -> dict[str, Any]:
        current = k.get_json("gatewayuser", self.name, self.namespace)
        assert current is not None, f"GatewayUser {self.namespace}/{self.name} disappeared"
        return current


@pytest.fixture(scope="session")
def gateway_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if os.environ.get("LLMGW_E2E_EXTERNAL"):
        return {key: os.environ[key] for key in ("KUBECONFIG", "LLM_GATEWAY_URL") if key in os.environ}
    env: dict[str, str] = request.getfixturevalue("stack_env")
    return env


@pytest.fixture(scope="session")
def gateway_url(gateway_env: dict[str, str]) -> str:
    return gateway_env["LLM_GATEWAY_URL"].rstrip("/")


@pytest.fixture(scope="session")
def gateway_root(gateway_url: str) -> str:
    return gateway_url.removesuffix("/v1")


@pytest.fixture(scope="session")
def standard_tiers(gateway_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    k.apply(STANDARD_TIERS)
    tiers = {}
    for doc in yaml.safe_load_all(STANDARD_TIERS.read_text()):
        if doc and doc.get("kind") == "GatewayTier":
            name = doc["metadata"]["name"]
            tiers[name] = k.wait_ready("gatewaytier", name, timeout=60)
    return tiers


@pytest.fixture(scope="session")
def e2e_namespace(gateway_env: dict[str, str]) -> Iterator[str]:
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    k.kubectl("create", "namespace", namespace)
    yield namespace
    k.kubectl("delete", "gatewayusers", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    k.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def make_user(
    e2e_namespace: str, standard_tiers: dict[str, dict[str, Any]]
) -> Callable[..., GatewayUserHandle]:
    """Apply a GatewayUser in the e2e namespace, wait for Ready, return its key from the Secret."""

    def _make(tier: str, **spec_overrides: Any) -> GatewayUserHandle:
        name = f"u-{uuid.uuid4().hex[:8]}"
        email = f"{name}@e2e.example.com"
        manifest = {
            "apiVersion": "llmgateway.io/v1alpha1",
            "kind": "GatewayUser",
            "metadata": {"name": name, "namespace": e2e_namespace},
            "spec": {"email": email, "tier": tier, **spec_overrides},
        }
        k.apply(yaml.safe_dump(manifest) + "\n")
        obj = k.wait_ready("gatewayuser", name, e2e_namespace, timeout=60)
        api_key, base_url = k.user_key(obj)
        return GatewayUserHandle(name, e2e_namespace, email, api_key, base_url, obj)

    return _make
