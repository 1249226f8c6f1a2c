"""Flat rows from GatewayTier / GatewayUser objects (spec + status), for `list` and `usage`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(since: datetime | None, now: datetime | None = None) -> str | None:
    """kubectl-style age: 45s, 12m, 5h, 3d."""
    if since is None:
        return None
    seconds = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any] | None:
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(entry, dict) and entry.get("type") == kind:
            return entry
    return None


def ready_text(obj: dict[str, Any]) -> str:
    cond = condition(obj)
    if cond is None:
        return "Unknown"
    status = str(cond.get("status", "Unknown"))
    reason = cond.get("reason")
    return status if status == "True" or not reason else f"{status} ({reason})"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def user_row(
    obj: dict[str, Any], tiers: dict[str, dict[str, Any]], now: datetime | None = None
) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    tier_name = spec.get("tier")
    tier_spec = (tiers.get(str(tier_name)) or {}).get("spec") or {}
    spend = _number(status.get("spendUSD"))
    budget = _number(status.get("maxBudgetUSD"))
    if budget is None:
        budget = _number(spec.get("monthlyBudgetUSD"))
    if budget is None:
        budget = _number(tier_spec.get("monthlyBudgetUSD"))
    rpm = status.get("rpmLimit", spec.get("rpmLimit", tier_spec.get("rpmLimit")))
    remaining = None if budget is None else round(max(0.0, budget - (spend or 0.0)), 6)
    key_since = parse_time(status.get("keyCreatedAt")) or parse_time(status.get("keyCreationTime"))
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "email": spec.get("email"),
        "tier": tier_name,
        "spendUSD": spend,
        "budgetUSD": budget,
        "remainingUSD": remaining,
        "rpm": rpm,
        "ready": ready_text(obj),
        "suspended": bool(spec.get("suspended", False)),
        "secretName": status.get("secretName"),
        "keyAge": age(key_since, now),
        "budgetResetAt": status.get("budgetResetAt"),
    }


def tier_row(obj: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "name": meta.get("name"),
        "budgetUSD": _number(spec.get("monthlyBudgetUSD")),
        "rpm": spec.get("rpmLimit"),
        "tpm": spec.get("tpmLimit"),
        "models": ",".join(spec.get("models") or []),
        "users": status.get("users"),
        "ready": ready_text(obj),
        "age": age(parse_time(meta.get("creationTimestamp")), now),
        "description": spec.get("description"),
    }
