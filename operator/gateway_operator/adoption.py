"""Ownership of LiteLLM keys under our aliases: what the operator may do with a key it finds. Pure.

Two questions, answered from the metadata the operator writes on every key it creates
(``managed-by: llm-gateway-operator`` and the GatewayUser's ``uid``, see desired.desired_key):

- a GatewayUser's alias already holds a key that is not the Secret's: replace it (ours), adopt it or
  leave it alone (not ours: made by the previous generation's onboarding script or by hand), per the
  adoption policy;
- the garbage collection: which keys of ours no GatewayUser accounts for any more, and which retired
  keys (key rotation) are past their deadline. Keys that are not ours are never candidates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway_operator import naming
from gateway_operator.conditions import READY, get_condition
from gateway_operator.models import MANAGED_BY, GatewayUserStatus, KeyRecord

REASON_KEY_CONFLICT = "KeyConflict"
REASON_KEY_ADOPTED = "KeyAdopted"
# Metadata of a retired key (key rotation): ISO-8601 time after which it must be revoked.
RETIRE_AFTER = "llmgw_retire_after"


class AdoptionPolicy(enum.StrEnum):
    # Take the alias over: mint our own key with the foreign key's spend, revoke the foreign key.
    ADOPT = "Adopt"
    # Leave the foreign key untouched; the GatewayUser stays not Ready (KeyConflict) until someone acts.
    IGNORE = "Ignore"


# Leaving alone is the default: a foreign key may be in use by apps the operator knows nothing about, and
# revoking it cannot be undone; adopting is one field away (spec.adoptionPolicy or ADOPTION_POLICY).
DEFAULT_POLICY = AdoptionPolicy.IGNORE


class Owner(enum.StrEnum):
    THIS_USER = "this-user"  # our marker and this GatewayUser's uid
    EARLIER_USER = "earlier-user"  # our marker, another uid: an earlier GatewayUser of the same name
    FOREIGN = "foreign"  # no marker of ours


class Action(enum.StrEnum):
    REPLACE = "replace"  # ours: replace it by the Secret's value, spend carried (a lost-Secret rotation)
    ADOPT = "adopt"  # not ours, policy Adopt
    LEAVE = "leave"  # not ours, policy Ignore


class KeyConflictError(Exception):
    """The alias holds a key that is not ours and the policy says leave it. ``str()`` is safe to show."""


def is_ours(key: KeyRecord) -> bool:
    return key.metadata.get("managed-by") == MANAGED_BY


def owner(key: KeyRecord, uid: str) -> Owner:
    if not is_ours(key):
        return Owner.FOREIGN
    return Owner.THIS_USER if key.metadata.get("uid") == uid else Owner.EARLIER_USER


def effective_policy(user_policy: str | None, default: str | AdoptionPolicy) -> AdoptionPolicy:
    """The GatewayUser's spec.adoptionPolicy wins over the operator's ADOPTION_POLICY."""
    return AdoptionPolicy(user_policy) if user_policy else AdoptionPolicy(default)


def user_policy(spec: Any) -> str | None:
    """spec.adoptionPolicy of a GatewayUserSpec (None when unset or when the model does not carry it)."""
    value = getattr(spec, "adoption_policy", None)
    return str(value) if value else None


def decide(key: KeyRecord, uid: str, policy: AdoptionPolicy) -> Action:
    """What to do with ``key``, found under this GatewayUser's alias with another value than its Secret's."""
    if owner(key, uid) is not Owner.FOREIGN:
        return Action.REPLACE
    return Action.ADOPT if policy is AdoptionPolicy.ADOPT else Action.LEAVE


def conflict_message(key: KeyRecord, alias: str) -> str:
    return (
        f"LiteLLM already has a key under the alias {alias} that this operator did not create "
        f"(key {naming.key_id(key.token)}, team {key.team_id or 'none'}, spend {key.spend:.4f} USD); "
        "it is left untouched (adoption policy Ignore). To take it over (spend carried over, that key "
        "revoked) set spec.adoptionPolicy: Adopt; or delete that key in LiteLLM; "
        "or rename this GatewayUser"
    )


def adopted_message(old: KeyRecord, new_token: str | None) -> str:
    return (
        f"key {naming.key_id(old.token)} under this alias was not created by this operator "
        f"(team {old.team_id or 'none'}); adopted: replaced by {naming.key_id(new_token)} with its "
        f"spend {old.spend:.4f} USD, and revoked"
    )


# --- garbage collection -----------------------------------------------------------------------------


class GcReason(enum.StrEnum):
    ORPHAN = "orphan"  # its GatewayUser is gone
    RETIRED = "retired"  # a retired key (rotation) past its deadline


@dataclass(frozen=True)
class GcCandidate:
    """A key of ours the collection looks at; never carries the key, only its id (a hash prefix)."""

    alias: str
    key_id: str | None
    token: str | None
    team: str | None
    spend: float
    age_seconds: float | None
    reason: GcReason
    due: bool  # revoke now (False: a retired key still within its grace)
    keep_until: datetime | None = None

    def row(self) -> dict[str, Any]:
        """For reports (Events, logs, the CLI): everything except the token."""
        return {
            "alias": self.alias,
            "keyId": self.key_id,
            "team": self.team,
            "spendUSD": round(self.spend, 6),
            "ageSeconds": None if self.age_seconds is None else round(self.age_seconds),
            "reason": str(self.reason),
            "keepUntil": self.keep_until.isoformat().replace("+00:00", "Z") if self.keep_until else None,
        }


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _utc(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def alias_namespace(alias: str | None) -> str | None:
    """The namespace a (live or retired) alias of ours names, None if it is not one."""
    if not alias:
        return None
    parsed = naming.parse_key_alias(alias.partition(naming.RETIRED_SUFFIX)[0])
    return parsed[0] if parsed else None


def gc_candidate(
    key: KeyRecord, live_aliases: set[str] | frozenset[str], now: datetime, grace_seconds: float
) -> GcCandidate | None:
    """None unless ``key`` is ours and either its GatewayUser is gone or it is a retired key.

    - A key of a live GatewayUser (its alias in ``live_aliases``) is never a candidate.
    - A retired key (alias '<alias>:retired[-<keyId>]') whose metadata says when to retire it is due
      ``grace_seconds`` after that time, whether its GatewayUser lives or not (the rotation revokes it
      on time, folding its spend into the live key; this catches a rotation that did not). Without that
      time, a retired key of a live GatewayUser is left to that user's reconcile (it may still carry
      the spend over from it); otherwise it is an orphan.
    - An orphan is due ``grace_seconds`` after its creation (a key created a moment before its
      GatewayUser appears in the operator's index is not an orphan).
    """
    alias = key.key_alias
    if not alias or not naming.is_managed_alias(alias) or not is_ours(key):
        return None
    created = _utc(key.created_at) if key.created_at else None
    age = (now - created).total_seconds() if created else None

    def candidate(reason: GcReason, due: bool, keep_until: datetime | None = None) -> GcCandidate:
        return GcCandidate(
            alias=alias,
            key_id=naming.key_id(key.token),
            token=key.token,
            team=key.team_id,
            spend=key.spend,
            age_seconds=age,
            reason=reason,
            due=due,
            keep_until=keep_until,
        )

    base, retired, _ = alias.partition(naming.RETIRED_SUFFIX)  # '<alias>:retired' or '<alias>:retired-<id>'
    if retired:
        retire_after = parse_time(key.metadata.get(RETIRE_AFTER))
        if retire_after is not None:
            deadline = retire_after.timestamp() + grace_seconds
            due = now.timestamp() >= deadline
            return candidate(GcReason.RETIRED, due, None if due else datetime.fromtimestamp(deadline, UTC))
        if base in live_aliases:
            return None
    elif alias in live_aliases:
        return None
    return candidate(GcReason.ORPHAN, age is not None and age >= grace_seconds)


def may_hold_foreign_key(status: GatewayUserStatus) -> bool:
    """Whether a GatewayUser's alias may hold a key that is not ours (its deletion must then look before
    deleting by alias): it never had a key of ours, or its Ready condition says KeyConflict."""
    ready = get_condition(status.conditions, READY)
    return status.key_id is None or (ready is not None and ready.reason == REASON_KEY_CONFLICT)
