"""Operator configuration from the environment (the chart sets these; the master key comes from a Secret)."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    litellm_admin_url: str = Field(
        default="http://127.0.0.1:4000", validation_alias=AliasChoices("LITELLM_ADMIN_URL")
    )
    litellm_master_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LITELLM_MASTER_KEY")
    )
    # Base URL written into every user Secret (what apps use as OPENAI_BASE_URL).
    gateway_public_url: str = Field(
        default="", validation_alias=AliasChoices("GATEWAY_PUBLIC_URL", "LLM_GATEWAY_URL")
    )
    # Comma-separated namespaces to watch for GatewayUsers; empty means all namespaces.
    watch_namespaces: str = Field(default="", validation_alias=AliasChoices("WATCH_NAMESPACES"))
    litellm_max_concurrency: int = Field(
        default=10, ge=1, le=1000, validation_alias=AliasChoices("LITELLM_MAX_CONCURRENCY")
    )
    litellm_timeout_seconds: float = Field(
        default=15.0, gt=0, validation_alias=AliasChoices("LITELLM_TIMEOUT_SECONDS")
    )
    litellm_retries: int = Field(default=4, ge=0, le=20, validation_alias=AliasChoices("LITELLM_RETRIES"))
    litellm_backoff_seconds: float = Field(
        default=0.5, ge=0, validation_alias=AliasChoices("LITELLM_BACKOFF_SECONDS")
    )
    resync_interval_seconds: float = Field(
        default=300.0, ge=1, validation_alias=AliasChoices("RESYNC_INTERVAL_SECONDS")
    )
    # Keys of our own that no GatewayUser accounts for are deleted only after this age (creation races).
    orphan_grace_seconds: float = Field(
        default=120.0, ge=0, validation_alias=AliasChoices("ORPHAN_GRACE_SECONDS")
    )
    # What the per-tier resync does with keys of ours that no GatewayUser accounts for (and retired keys
    # past their deadline): revoke them, only report them (dry-run: Event, log, metric), or nothing (off).
    gc_mode: Literal["revoke", "dry-run", "off"] = Field(
        default="revoke", validation_alias=AliasChoices("GC_MODE")
    )
    # A key under a GatewayUser's alias that this operator did not create: Ignore (leave it, the user is
    # not Ready with reason KeyConflict) or Adopt (replace it, spend carried over); spec.adoptionPolicy wins.
    adoption_policy: Literal["Adopt", "Ignore"] = Field(
        default="Ignore", validation_alias=AliasChoices("ADOPTION_POLICY")
    )
    # A key whose budget_reset_at is this far in the past was missed by LiteLLM's reset job (which runs
    # every ~10 minutes): the resync resets it (spend 0, reset time recomputed) and posts an Event.
    budget_reset_grace_seconds: float = Field(
        default=1800.0, ge=0, validation_alias=AliasChoices("BUDGET_RESET_GRACE_SECONDS")
    )
    # Prometheus /metrics on its own port (the chart sets 9090); 0 serves none.
    metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias=AliasChoices("METRICS_PORT"))
    health_host: str = Field(default="0.0.0.0", validation_alias=AliasChoices("HEALTH_HOST"))
    health_port: int = Field(default=8080, ge=0, le=65535, validation_alias=AliasChoices("HEALTH_PORT"))
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    # Each LiteLLM user joins its tier's team. Saves LiteLLM ~5 ms CPU per request (a missing membership row
    # is looked up on every request, never cached), but a member's /user/info lists every key of the tier
    # (alias, hash, email, spend) and bulk onboarding is ~3x slower (each join rewrites the team's member
    # list). Off by default; see README "Tier-team membership".
    team_membership: bool = Field(default=False, validation_alias=AliasChoices("TEAM_MEMBERSHIP"))
    # Kopf peering name; empty runs standalone (a single replica, which is what the chart deploys).
    peering: str = Field(default="", validation_alias=AliasChoices("KOPF_PEERING"))
    # With peering, only the live replica of the highest priority acts; the others stand by and take over when
    # its peering record expires (lifetime) or it exits cleanly. Kopf pauses ALL replicas that share the top
    # priority, so the default is a random one per process: exactly one replica acts.
    peering_priority: int | None = Field(
        default=None, ge=0, le=2**31 - 1, validation_alias=AliasChoices("KOPF_PEERING_PRIORITY")
    )
    peering_lifetime_seconds: int = Field(
        default=60, ge=5, le=3600, validation_alias=AliasChoices("KOPF_PEERING_LIFETIME_SECONDS")
    )

    @field_validator("litellm_admin_url", "gateway_public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def namespaces(self) -> list[str]:
        return [ns.strip() for ns in self.watch_namespaces.split(",") if ns.strip()]

    @property
    def effective_peering_priority(self) -> int:
        if self.peering_priority is not None:
            return self.peering_priority
        return random.SystemRandom().randint(1, 2**31 - 1)

    @property
    def public_url(self) -> str:
        return self.gateway_public_url or f"{self.litellm_admin_url}/v1"


def load() -> Settings:
    return Settings()
