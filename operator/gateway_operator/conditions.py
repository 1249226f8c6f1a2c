"""Kubernetes-style conditions: pure transitions (lastTransitionTime moves only when status changes)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from gateway_operator.models import Condition, ConditionStatus

READY = "Ready"

# Reasons of the Ready condition.
PROVISIONED = "Provisioned"  # tier: team exists and matches; user: key active, Secret in place
TIER_NOT_FOUND = "TierNotFound"
TIER_NOT_READY = "TierNotReady"
BACKEND_UNAVAILABLE = "BackendUnavailable"
BACKEND_REJECTED = "BackendRejected"
BUDGET_EXCEEDED = "BudgetExceeded"
SUSPENDED = "Suspended"
SECRET_CONFLICT = "SecretConflict"
EMAIL_CONFLICT = "EmailConflict"
INVALID_SPEC = "InvalidSpec"
IN_USE = "InUse"
RECONCILING = "Reconciling"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: str | None = None,
) -> tuple[Condition, ...]:
    """Return ``conditions`` with ``type_`` set; other types are kept in their order."""
    existing = list(conditions)
    previous = next((c for c in existing if c.type == type_), None)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else (now or now_iso())
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=transition,
        observedGeneration=generation,
    )
    if previous is None:
        return (*existing, updated)
    return tuple(updated if c.type == type_ else c for c in existing)


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Iterable[Condition], type_: str = READY) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def user_ready(
    *,
    suspended: bool,
    spend: float | None,
    max_budget: float | None,
    secret_name: str,
) -> tuple[ConditionStatus, str, str]:
    """Ready status, reason and message of a user whose key and Secret are in place."""
    if suspended:
        return "False", SUSPENDED, "the key is blocked because spec.suspended is true"
    if spend is not None and max_budget is not None and spend >= max_budget:
        return (
            "False",
            BUDGET_EXCEEDED,
            f"spend {spend:.4f} USD reached the monthly budget of {max_budget:g} USD; "
            "requests are rejected until the budget resets on the 1st of the month (UTC)",
        )
    return "True", PROVISIONED, f"key active; Secret {secret_name} holds it"
