"""Desired LiteLLM state derived from the custom resources, and the diff against what LiteLLM holds.

Pure functions: the services layer reads actual state, asks these what to write, and writes only the
difference, so a reconcile of an unchanged object makes no writes at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway_operator import naming
from gateway_operator.models import (
    GatewayTierSpec,
    GatewayUserSpec,
    KeyRecord,
    ObjectRef,
    TeamRecord,
    UserRecord,
)

BUDGET_DURATION = "1mo"
# Keys may call the LLM API and read their own key and user info, nothing else: by default a team key
# can read /team/info, which lists every teammate's key, spend and metadata.
ALLOWED_ROUTES: tuple[str, ...] = ("llm_api_routes", "/key/info", "/user/info")
USER_ROLE = "internal_user"


@dataclass(frozen=True)
class DesiredTeam:
    team_id: str
    team_alias: str
    models: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def create_body(self) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "team_alias": self.team_alias,
            "models": list(self.models),
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class DesiredUser:
    user_id: str
    user_email: str
    user_alias: str | None
    models: tuple[str, ...]
    max_budget: float
    budget_duration: str
    rpm_limit: int
    tpm_limit: int | None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The tier's team the user is a member of (None: membership is not managed, see team_membership).
    team_id: str | None = None

    def create_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "user_email": self.user_email,
            "user_role": USER_ROLE,
            "models": list(self.models),
            "max_budget": self.max_budget,
            "budget_duration": self.budget_duration,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "metadata": dict(self.metadata),
            "auto_create_key": False,
        }
        if self.user_alias is not None:
            body["user_alias"] = self.user_alias
        if self.team_id is not None:
            # /user/new adds the member in the same call (role "user", no member budget).
            body["teams"] = [self.team_id]
        return body


@dataclass(frozen=True)
class DesiredKey:
    key_alias: str
    team_id: str
    user_id: str
    models: tuple[str, ...]
    max_budget: float
    budget_duration: str
    rpm_limit: int
    tpm_limit: int | None
    blocked: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    allowed_routes: tuple[str, ...] = ALLOWED_ROUTES

    def generate_body(self, key_value: str, spend: float = 0.0) -> dict[str, Any]:
        body = self.update_fields()
        body.update({"key": key_value, "key_alias": self.key_alias, "user_id": self.user_id})
        if spend:
            body["spend"] = spend
        return body

    def update_fields(self) -> dict[str, Any]:
        return {
            "key_alias": self.key_alias,
            "team_id": self.team_id,
            "user_id": self.user_id,
            "models": list(self.models),
            "max_budget": self.max_budget,
            "budget_duration": self.budget_duration,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "blocked": self.blocked,
            "metadata": dict(self.metadata),
            "allowed_routes": list(self.allowed_routes),
        }


def next_budget_reset(now: datetime) -> datetime:
    """When a "1mo" budget resets: 00:00 UTC on the 1st of the next month (LiteLLM's default timezone)."""
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def effective_budget(user: GatewayUserSpec, tier: GatewayTierSpec) -> float:
    return user.monthly_budget_usd if user.monthly_budget_usd is not None else tier.monthly_budget_usd


def effective_rpm(user: GatewayUserSpec, tier: GatewayTierSpec) -> int:
    return user.rpm_limit if user.rpm_limit is not None else tier.rpm_limit


def desired_team(tier_name: str, tier: GatewayTierSpec) -> DesiredTeam:
    # No budget or rpm on the team: those would be aggregate caps over every key of the tier.
    return DesiredTeam(
        team_id=naming.team_id(tier_name),
        team_alias=tier_name,
        models=tier.models,
        metadata=naming.managed_metadata(tier=tier_name),
    )


def desired_user(
    user: GatewayUserSpec, tier: GatewayTierSpec, tier_name: str, *, member: bool = False
) -> DesiredUser:
    """The LiteLLM user row: informational (/user/info shows it); the key carries the enforced limits.
    ``member``: the user also joins the tier's team (see ``membership_changes``)."""
    return DesiredUser(
        user_id=naming.user_id(user.email),
        user_email=naming.user_id(user.email),
        user_alias=user.display_name,
        models=tier.models,
        max_budget=effective_budget(user, tier),
        budget_duration=BUDGET_DURATION,
        rpm_limit=effective_rpm(user, tier),
        tpm_limit=tier.tpm_limit,
        metadata=naming.managed_metadata(tier=tier_name),
        team_id=naming.team_id(tier_name) if member else None,
    )


def desired_key(ref: ObjectRef, user: GatewayUserSpec, tier: GatewayTierSpec) -> DesiredKey:
    assert ref.namespace is not None, "GatewayUser is namespaced"
    return DesiredKey(
        key_alias=naming.key_alias(ref.namespace, ref.name),
        team_id=naming.team_id(user.tier),
        user_id=naming.user_id(user.email),
        models=tier.models,
        max_budget=effective_budget(user, tier),
        budget_duration=BUDGET_DURATION,
        rpm_limit=effective_rpm(user, tier),
        tpm_limit=tier.tpm_limit,
        blocked=user.suspended,
        # Identity only: no personal data beyond the email, which is the user id anyway.
        metadata=naming.managed_metadata(namespace=ref.namespace, name=ref.name, uid=ref.uid, tier=user.tier),
    )


# --- diffs --------------------------------------------------------------------------------------------


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def _same_set(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> bool:
    return sorted(a) == sorted(b)


def team_changes(desired: DesiredTeam, actual: TeamRecord) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if actual.team_alias != desired.team_alias:
        changes["team_alias"] = desired.team_alias
    if not _same_set(actual.models, desired.models):
        changes["models"] = list(desired.models)
    if any(actual.metadata.get(k) != v for k, v in desired.metadata.items()):
        # /team/update replaces metadata wholesale: keep what others put there.
        changes["metadata"] = {**actual.metadata, **desired.metadata}
    # Aggregate caps would throttle the whole tier; we own the team, so clear any set in the UI.
    for name in ("max_budget", "rpm_limit", "tpm_limit"):
        if getattr(actual, name) is not None:
            changes[name] = None
    if actual.blocked:
        changes["blocked"] = False
    return changes


def user_changes(desired: DesiredUser, actual: UserRecord) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if desired.user_alias is not None and actual.user_alias != desired.user_alias:
        changes["user_alias"] = desired.user_alias
    if not _same_set(actual.models, desired.models):
        changes["models"] = list(desired.models)
    if not _same_number(actual.max_budget, desired.max_budget):
        changes["max_budget"] = desired.max_budget
    if actual.budget_duration != desired.budget_duration:
        changes["budget_duration"] = desired.budget_duration
    if actual.rpm_limit != desired.rpm_limit:
        changes["rpm_limit"] = desired.rpm_limit
    if actual.tpm_limit != desired.tpm_limit:
        changes["tpm_limit"] = desired.tpm_limit
    if any(actual.metadata.get(k) != v for k, v in desired.metadata.items()):
        changes["metadata"] = {**actual.metadata, **desired.metadata}
    return changes


@dataclass(frozen=True)
class MembershipChanges:
    join: str | None = None  # the tier's team, when the user is not a member yet
    leave: tuple[str, ...] = ()  # other tier teams of ours the user is still a member of

    def __bool__(self) -> bool:
        return self.join is not None or bool(self.leave)


def membership_changes(desired: DesiredUser, actual_teams: tuple[str, ...] | list[str]) -> MembershipChanges:
    """Team memberships to add and remove. Only our tier teams are left, never a team someone else added
    the user to; with membership unmanaged (``desired.team_id`` None) nothing changes: leaving the team
    that holds the user's key would delete the key (LiteLLM's /team/member_delete deletes the member's
    keys in that team)."""
    if desired.team_id is None:
        return MembershipChanges()
    join = None if desired.team_id in actual_teams else desired.team_id
    ours = (t for t in set(actual_teams) if naming.tier_from_team_id(t) is not None)
    leave = tuple(sorted(t for t in ours if t != desired.team_id))
    return MembershipChanges(join=join, leave=leave)


def key_changes(desired: DesiredKey, actual: KeyRecord) -> dict[str, Any]:
    """Fields of /key/update that would make ``actual`` match ``desired`` (empty: nothing to write)."""
    changes: dict[str, Any] = {}
    if actual.key_alias != desired.key_alias:
        changes["key_alias"] = desired.key_alias
    if actual.team_id != desired.team_id:
        changes["team_id"] = desired.team_id
    if actual.user_id != desired.user_id:
        changes["user_id"] = desired.user_id
    if not _same_set(actual.models, desired.models):
        changes["models"] = list(desired.models)
    if not _same_number(actual.max_budget, desired.max_budget):
        changes["max_budget"] = desired.max_budget
    if actual.budget_duration != desired.budget_duration:
        changes["budget_duration"] = desired.budget_duration
    if actual.rpm_limit != desired.rpm_limit:
        changes["rpm_limit"] = desired.rpm_limit
    if actual.tpm_limit != desired.tpm_limit:
        changes["tpm_limit"] = desired.tpm_limit
    if bool(actual.blocked) != desired.blocked:
        changes["blocked"] = desired.blocked
    if not _same_set(actual.allowed_routes, desired.allowed_routes):
        changes["allowed_routes"] = list(desired.allowed_routes)
    if any(actual.metadata.get(k) != v for k, v in desired.metadata.items()):
        # /key/update replaces metadata wholesale: merge so LiteLLM's own entries survive.
        changes["metadata"] = {**actual.metadata, **desired.metadata}
    return changes
