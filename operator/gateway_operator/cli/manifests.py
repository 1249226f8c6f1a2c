"""GatewayUser manifests as the CLI writes them."""

from __future__ import annotations

from typing import Any

from gateway_operator.cli.names import normalize_email
from gateway_operator.models import API_VERSION, USER_KIND


def gateway_user(
    *, name: str, namespace: str, email: str, tier: str, display_name: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"email": normalize_email(email), "tier": tier}
    if display_name:
        spec["displayName"] = display_name
    return {
        "apiVersion": API_VERSION,
        "kind": USER_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def object_ref(obj: dict[str, Any]) -> str:
    """kind/name or kind/namespace/name, for messages."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "<unnamed>") if isinstance(meta, dict) else "<unnamed>"
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    kind = obj.get("kind", "<no kind>")
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def to_yaml(docs: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, explicit_start=True)
