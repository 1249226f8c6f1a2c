"""Typed views of the GatewayTier / GatewayUser custom resources and of the LiteLLM records we manage.

Field aliases are the camelCase names of the CRDs in crds/; construct with either spelling and dump with
``by_alias=True`` to get what Kubernetes stores. Pure data: no I/O here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP = "llmgateway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TIER_KIND = "GatewayTier"
TIER_PLURAL = "gatewaytiers"
USER_KIND = "GatewayUser"
USER_PLURAL = "gatewayusers"
MANAGED_BY = "llm-gateway-operator"

EMAIL_PATTERN = (
    r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
# "720h", "30d", "1h30m", "0s": units s, m, h, d (24h), w (7d); no fractions, no spaces.
DURATION_PATTERN = r"^([0-9]{1,6}[smhdw])+$"
DEFAULT_GRACE_PERIOD = "24h"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    def to_k8s(self) -> dict[str, Any]:
        """The Kubernetes (camelCase) form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class GatewayTierSpec(_Model):
    monthly_budget_usd: float = Field(alias="monthlyBudgetUSD", ge=0, le=1_000_000)
    rpm_limit: int = Field(alias="rpmLimit", ge=1, le=1_000_000)
    tpm_limit: int | None = Field(default=None, alias="tpmLimit", ge=1)
    models: tuple[str, ...] = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=1024)

    @field_validator("models")
    @classmethod
    def _models_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for model in value:
            if not re.match(MODEL_NAME_PATTERN, model) or len(model) > 128:
                raise ValueError(f"invalid model name {model!r}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate model names")
        return value


class GatewayTierStatus(_Model):
    team_id: str | None = Field(default=None, alias="teamId")
    users: int | None = None
    # Sums over the tier's users' keys (from the resync's /key/list pages), and over every tier.
    spend_usd: float | None = Field(default=None, alias="spendUSD")
    budget_usd: float | None = Field(default=None, alias="budgetUSD")
    gateway_spend_usd: float | None = Field(default=None, alias="gatewaySpendUSD")
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class BudgetAlert(_Model):
    """Highest budget threshold (percent) announced within the budget period ending at ``period``."""

    level: int = Field(ge=0, le=100)
    period: str | None = None


class KeyRotation(_Model):
    """When to replace the user's key, and how long the previous key keeps working afterwards."""

    every: str | None = Field(default=None, pattern=DURATION_PATTERN, max_length=32)
    grace_period: str = Field(
        default=DEFAULT_GRACE_PERIOD, alias="gracePeriod", pattern=DURATION_PATTERN, max_length=32
    )

    @field_validator("every")
    @classmethod
    def _every_positive(cls, value: str | None) -> str | None:
        if value is not None and not any(c in "123456789" for c in value):
            raise ValueError("every must be longer than 0")
        return value


class GatewayUserSpec(_Model):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    tier: str = Field(min_length=1, max_length=50, pattern=DNS_SUBDOMAIN_PATTERN)
    display_name: str | None = Field(default=None, alias="displayName", max_length=256)
    monthly_budget_usd: float | None = Field(default=None, alias="monthlyBudgetUSD", ge=0, le=1_000_000)
    rpm_limit: int | None = Field(default=None, alias="rpmLimit", ge=1, le=1_000_000)
    suspended: bool = False
    secret_name: str | None = Field(
        default=None, alias="secretName", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    key_rotation: KeyRotation | None = Field(default=None, alias="keyRotation")
    # A key under our alias that this operator did not create: take it over or leave it (ADOPTION_POLICY).
    adoption_policy: Literal["Adopt", "Ignore"] | None = Field(default=None, alias="adoptionPolicy")


class RetiredKeyStatus(_Model):
    """A replaced key that still works until ``expires_at`` (the end of its grace period)."""

    key_id: str = Field(alias="keyId")
    expires_at: str = Field(alias="expiresAt")


class GatewayUserStatus(_Model):
    tier: str | None = None
    key_alias: str | None = Field(default=None, alias="keyAlias")
    key_id: str | None = Field(default=None, alias="keyId")
    secret_name: str | None = Field(default=None, alias="secretName")
    spend_usd: float | None = Field(default=None, alias="spendUSD")
    max_budget_usd: float | None = Field(default=None, alias="maxBudgetUSD")
    budget_reset_at: str | None = Field(default=None, alias="budgetResetAt")
    rpm_limit: int | None = Field(default=None, alias="rpmLimit")
    tpm_limit: int | None = Field(default=None, alias="tpmLimit")
    models: tuple[str, ...] | None = None
    last_sync_time: str | None = Field(default=None, alias="lastSyncTime")
    budget_alert: BudgetAlert | None = Field(default=None, alias="budgetAlert")
    last_rotation_time: str | None = Field(default=None, alias="lastRotationTime")
    next_rotation_time: str | None = Field(default=None, alias="nextRotationTime")
    handled_rotate_at: str | None = Field(default=None, alias="handledRotateAt")
    retired_keys: tuple[RetiredKeyStatus, ...] = Field(default=(), alias="retiredKeys")
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class ObjectRef(_Model):
    """Identity of a custom object as the services need it (no kopf types)."""

    name: str
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    creation_timestamp: str = ""
    deleting: bool = False


class TierView(_Model):
    """A tier as a user reconcile sees it: spec plus whether its LiteLLM team is known to exist."""

    name: str
    spec: GatewayTierSpec
    team_ready: bool = False


class UserView(_Model):
    ref: ObjectRef
    spec: GatewayUserSpec
    status: GatewayUserStatus = GatewayUserStatus()
    # The object's llmgateway.io/rotate-at annotation: an on-demand rotation request.
    rotate_at: str | None = None


# --- LiteLLM records (what the admin API returns; only the fields we read) ---------------------------


class _Record(BaseModel):
    """LiteLLM answers null for empty lists, dicts and spend; every record reads them as empty/zero."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("models", "allowed_routes", mode="before", check_fields=False)
    @classmethod
    def _none_as_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("metadata", mode="before", check_fields=False)
    @classmethod
    def _none_as_empty_dict(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("spend", mode="before", check_fields=False)
    @classmethod
    def _none_as_zero(cls, value: Any) -> Any:
        return 0.0 if value is None else value


class KeyRecord(_Record):
    """A row of /key/list?return_full_object=true or /key/info (token is LiteLLM's sha256 of the key)."""

    token: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    models: tuple[str, ...] = ()
    max_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    spend: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    blocked: bool | None = None
    allowed_routes: tuple[str, ...] = ()
    created_at: datetime | None = None
    status: str | None = None


class UserRecord(_Record):
    user_id: str
    user_email: str | None = None
    user_alias: str | None = None
    models: tuple[str, ...] = ()
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    spend: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamRecord(_Record):
    team_id: str
    team_alias: str | None = None
    models: tuple[str, ...] = ()
    max_budget: float | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    blocked: bool | None = None
