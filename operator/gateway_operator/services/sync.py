"""Periodic status sync of one tier: walks the tier team's keys page by page (cost grows with pages of
/key/list, not with users), writes spend / budget / reset time back to each user's status, re-runs the
reconcile for users whose key drifted or vanished, and deletes keys of ours that nobody accounts for."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway_operator import budgets, metrics, naming
from gateway_operator import desired as want
from gateway_operator.models import USER_KIND, BudgetAlert, KeyRecord, TierView, UserView
from gateway_operator.services import users as user_service
from gateway_operator.services.core import Services

log = logging.getLogger(__name__)

PAGE_SIZE = 100

Reconcile = Callable[[UserView], Awaitable[None]]


@dataclass
class SyncReport:
    tier: str
    pages: int = 0
    keys: int = 0
    synced: int = 0
    status_writes: int = 0
    repaired: list[str] = field(default_factory=list)
    orphans_deleted: list[str] = field(default_factory=list)
    resets_repaired: list[str] = field(default_factory=list)
    spend_usd: float = 0.0  # over the keys of the tier's live users
    budget_usd: float = 0.0


async def list_team_keys(svc: Services, team_id: str) -> tuple[list[KeyRecord], int]:
    keys: list[KeyRecord] = []
    page = 1
    while True:
        result = await svc.litellm.key_list(team_id=team_id, page=page, size=PAGE_SIZE)
        keys.extend(result.keys)
        if page >= result.total_pages or not result.keys:
            return keys, page
        page += 1


def _needs_reconcile(user: UserView, tier: TierView, key: KeyRecord | None) -> bool:
    if key is None or user.spec.tier != tier.name:
        return True
    if (
        user.status.key_id != naming.key_id(key.token)
        or user.status.observed_generation != user.ref.generation
    ):
        return True
    return bool(want.key_changes(want.desired_key(user.ref, user.spec, tier.spec), key))


def _is_orphan(key: KeyRecord, live_aliases: set[str], now: datetime, grace_seconds: float) -> bool:
    if not naming.is_managed_alias(key.key_alias) or key.key_alias in live_aliases:
        return False
    if key.metadata.get("managed-by") not in (None, "llm-gateway-operator"):
        return False
    created = key.created_at
    if created is None:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (now - created).total_seconds() >= grace_seconds


async def repair_missed_reset(svc: Services, user: UserView, key: KeyRecord, now: datetime) -> KeyRecord:
    """Do what LiteLLM's reset job should have done: spend 0 and a recomputed budget_reset_at."""
    assert key.token is not None and key.budget_duration is not None
    # Re-sending the same budget_duration keeps a due reset time; a different one recomputes it.
    await svc.litellm.key_update(key.token, {"spend": 0, "budget_duration": budgets.RESET_NUDGE_DURATION})
    await svc.litellm.key_update(key.token, {"budget_duration": key.budget_duration})
    fresh = await svc.litellm.key_info(key.token)
    if fresh is None or fresh.budget_reset_at is None:
        fresh = key.model_copy(update={"spend": 0.0, "budget_reset_at": want.next_budget_reset(now)})
    else:
        fresh = fresh.model_copy(update={"token": key.token})
    metrics.BUDGET_RESETS_REPAIRED.inc()
    assert key.budget_reset_at is not None
    due = key.budget_reset_at if key.budget_reset_at.tzinfo else key.budget_reset_at.replace(tzinfo=UTC)
    svc.events(
        USER_KIND,
        user.ref,
        "Warning",
        budgets.BUDGET_RESET_MISSED,
        f"LiteLLM did not reset the budget of key {naming.key_id(key.token)} due at {due.isoformat()} "
        f"({(now - due).total_seconds() / 60:.0f} min ago); spend {key.spend:.4f} USD set to 0, "
        f"next reset {fresh.budget_reset_at.isoformat() if fresh.budget_reset_at else 'unknown'}",
    )
    return fresh


async def resync_tier(
    svc: Services,
    tier: TierView,
    users_by_alias: Mapping[str, UserView],
    reconcile: Reconcile,
) -> SyncReport:
    """``users_by_alias``: every live GatewayUser the operator knows (all tiers), by key alias."""
    report = SyncReport(tier=tier.name)
    keys, report.pages = await list_team_keys(svc, naming.team_id(tier.name))
    report.keys = len(keys)
    by_alias = {k.key_alias: k for k in keys if k.key_alias}

    for alias, user in users_by_alias.items():
        if user.ref.deleting:
            continue
        key = by_alias.get(alias)
        if user.spec.tier != tier.name and key is None:
            continue  # another tier's daemon looks after it
        if _needs_reconcile(user, tier, key):
            report.repaired.append(f"{user.ref.namespace}/{user.ref.name}")
            try:
                await reconcile(user)
            except Exception as error:  # one user's failure must not stop the walk
                log.warning("resync of %s/%s failed: %s", user.ref.namespace, user.ref.name, error)
            continue
        assert key is not None
        secret_name = naming.secret_name(user.ref.name, user.spec.secret_name)
        async with svc.locked(user_service.lock_key(user.ref.namespace or "", user.ref.name)):
            now = datetime.now(UTC)
            if key.budget_duration and budgets.reset_missed(
                key.budget_reset_at, now, svc.settings.budget_reset_grace_seconds
            ):
                try:
                    key = by_alias[alias] = await repair_missed_reset(svc, user, key, now)
                    # The repair starts a new budget period, whatever reset time LiteLLM now reports.
                    restart = user.status.model_copy(update={"budget_alert": BudgetAlert(level=0)})
                    user = user.model_copy(update={"status": restart})
                    report.resets_repaired.append(f"{user.ref.namespace}/{user.ref.name}")
                except Exception as error:  # reported; the next resync tries again
                    log.warning(
                        "budget reset repair of %s/%s failed: %s", user.ref.namespace, user.ref.name, error
                    )
            status = user_service.status_from_key(user, tier, secret_name, key)
            if await user_service.write_status(svc, user, status):
                report.status_writes += 1
                user_service.announce_budget(svc, user, status)
        report.synced += 1

    for alias, key in by_alias.items():
        owner = users_by_alias.get(alias)
        if owner is not None and not owner.ref.deleting and owner.spec.tier == tier.name:
            report.spend_usd += key.spend
            report.budget_usd += key.max_budget or 0.0
    now = datetime.now(UTC)
    orphans = [k for k in keys if _is_orphan(k, set(users_by_alias), now, svc.settings.orphan_grace_seconds)]
    if orphans:
        tokens = [k.token for k in orphans if k.token]
        await svc.litellm.key_delete(tokens=tokens)
        report.orphans_deleted = [str(k.key_alias) for k in orphans]
        log.info("tier %s: deleted %d orphaned keys: %s", tier.name, len(orphans), report.orphans_deleted)
    return report
