"""Periodic status sync of one tier: walks the tier team's keys page by page (cost grows with pages of
/key/list, not with users), writes spend / budget / reset time back to each user's status, re-runs the
reconcile for users whose key drifted or vanished, and deletes keys of ours that nobody accounts for."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway_operator import desired as want
from gateway_operator import naming
from gateway_operator.models import KeyRecord, TierView, UserView
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
        status = user_service.status_from_key(user, tier, secret_name, key)
        async with svc.locked(user_service.lock_key(user.ref.namespace or "", user.ref.name)):
            if await user_service.write_status(svc, user, status):
                report.status_writes += 1
        report.synced += 1

    now = datetime.now(UTC)
    orphans = [k for k in keys if _is_orphan(k, set(users_by_alias), now, svc.settings.orphan_grace_seconds)]
    if orphans:
        tokens = [k.token for k in orphans if k.token]
        await svc.litellm.key_delete(tokens=tokens)
        report.orphans_deleted = [str(k.key_alias) for k in orphans]
        log.info("tier %s: deleted %d orphaned keys: %s", tier.name, len(orphans), report.orphans_deleted)
    return report
