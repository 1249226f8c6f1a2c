"""Periodic status sync of one tier: reads the tier team's keys in one call (/team/info; pages of
/key/list as a fallback), writes spend / budget / reset time back to each user's status, re-runs the
reconcile for users whose key drifted or vanished, and garbage-collects keys of ours that nobody accounts
for (GC_MODE: revoke, dry-run or off), with a report as an Event on the tier, a log line and a metric."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway_operator import adoption, budgets, metrics, naming
from gateway_operator import desired as want
from gateway_operator.models import (
    TIER_KIND,
    TIER_PLURAL,
    USER_KIND,
    BudgetAlert,
    KeyRecord,
    ObjectRef,
    TierView,
    UserView,
)
from gateway_operator.services import users as user_service
from gateway_operator.services.core import EventType, Services

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # LiteLLM 1.108.7 caps /key/list at 100 per page
# /team/info answers with every key of the team in one response (1,000 keys: 1.25 MB in ~1.3 s on the
# shared 2-core test box, vs ~2.1 s for the ten /key/list pages): far beyond that, one answer would
# block LiteLLM's worker for many seconds and near the client timeout, so the resync pages instead.
TEAM_INFO_MAX_KEYS = 2000

Reconcile = Callable[[UserView], Awaitable[None]]
Latest = Callable[[UserView], UserView | None]

GC_ACTIONS = metrics.ORPHAN_ACTIONS
REASON_REVOKED = "OrphanKeysRevoked"
REASON_FOUND = "OrphanKeysFound"
REASON_FAILED = "OrphanKeysRevokeFailed"
EVENT_LIMIT = 1000  # characters of an Event message (the handlers' event sink truncates there)


@dataclass
class SyncReport:
    tier: str
    pages: int = 0
    keys: int = 0
    synced: int = 0
    status_writes: int = 0
    repaired: list[str] = field(default_factory=list)
    orphans_deleted: list[str] = field(default_factory=list)
    orphans_found: list[str] = field(default_factory=list)  # dry-run: would have been revoked
    resets_repaired: list[str] = field(default_factory=list)
    spend_usd: float = 0.0  # over the keys of the tier's live users
    budget_usd: float = 0.0


async def list_team_keys(svc: Services, team_id: str, expected: int = 0) -> tuple[list[KeyRecord], int]:
    """Every key of the team and the number of admin calls it took: one /team/info, unless the team is
    expected to hold more than TEAM_INFO_MAX_KEYS keys or /team/info does not carry the keys' tokens;
    then pages of /key/list."""
    asked = expected <= TEAM_INFO_MAX_KEYS
    whole = await svc.litellm.team_keys(team_id) if asked else None
    if whole is not None:
        return list(whole), 1
    keys: list[KeyRecord] = []
    page = 1
    while True:
        result = await svc.litellm.key_list(team_id=team_id, page=page, size=PAGE_SIZE)
        keys.extend(result.keys)
        if page >= result.total_pages or not result.keys:
            return keys, page + int(asked)
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
    latest: Latest | None = None,
) -> SyncReport:
    """``users_by_alias``: every live GatewayUser the operator knows (all tiers), by key alias, as of the
    start of the pass. ``latest``: the user as the operator knows it now (None: gone), asked before a
    reconcile. Listing a big tier takes minutes, and in a bulk a user still waiting for its key in the
    snapshot is often Ready by the time the pass reaches it: without the look, the pass re-reconciled it."""
    report = SyncReport(tier=tier.name)
    members = sum(1 for u in users_by_alias.values() if u.spec.tier == tier.name)
    keys, report.pages = await list_team_keys(svc, naming.team_id(tier.name), expected=members)
    report.keys = len(keys)
    by_alias = {k.key_alias: k for k in keys if k.key_alias}

    for alias, user in users_by_alias.items():
        if user.ref.deleting:
            continue
        key = by_alias.get(alias)
        if user.spec.tier != tier.name and key is None:
            continue  # another tier's daemon looks after it
        if key is None and user.status.observed_generation is None:
            continue  # never reconciled yet: it is in kopf's queue (a bulk create), kopf looks after it
        if _needs_reconcile(user, tier, key) and latest is not None:
            now_known = latest(user)
            if now_known is None or now_known.ref.deleting:
                continue
            if key is None and now_known.status.observed_generation is None:
                continue
            user = now_known
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
    await collect_garbage(svc, tier.name, keys, frozenset(users_by_alias), report)
    return report


def _describe(candidate: adoption.GcCandidate) -> str:
    age = candidate.age_seconds
    shown = "unknown age" if age is None else f"age {_duration(age)}"
    return (
        f"{candidate.alias} (key {candidate.key_id}, team {candidate.team or 'none'}, "
        f"spend {candidate.spend:.4f} USD, {shown}, {candidate.reason})"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def gc_message(action: str, candidates: list[adoption.GcCandidate], limit: int = EVENT_LIMIT) -> str:
    verb = {"revoked": "revoked", "dry-run": "would revoke (GC_MODE=dry-run)", "failed": "failed to revoke"}
    head = f"{verb[action]} {len(candidates)} key(s) of ours that no GatewayUser accounts for: "
    parts: list[str] = []
    for index, candidate in enumerate(candidates):
        part = _describe(candidate)
        rest = len(candidates) - index - 1
        tail = f"; and {rest} more" if rest else ""
        if len(head) + len("; ".join([*parts, part])) + len(tail) > limit:
            return head + "; ".join(parts) + f"; and {len(candidates) - index} more"
        parts.append(part)
    return head + "; ".join(parts)


# The last dry-run report per tier, so an unchanged set of orphans is not re-announced every resync.
_last_dry_run: dict[str, frozenset[str]] = {}


async def collect_garbage(
    svc: Services,
    tier_name: str,
    keys: list[KeyRecord],
    live_aliases: frozenset[str],
    report: SyncReport,
) -> list[adoption.GcCandidate]:
    """Revoke (or, in dry-run, report) the due candidates among ``keys``; returns them."""
    mode = svc.settings.gc_mode
    if mode == "off":
        for action in GC_ACTIONS:
            metrics.ORPHAN_KEYS.labels(tier=tier_name, action=action).set(0)
        return []
    watched = frozenset(svc.settings.namespaces)
    if watched:
        # Users of other namespaces are not in our index: their keys are not orphans for us to judge.
        keys = [k for k in keys if adoption.alias_namespace(k.key_alias) in watched]
    now = datetime.now(UTC)
    grace = svc.settings.orphan_grace_seconds
    found = (adoption.gc_candidate(k, live_aliases, now, grace) for k in keys)
    due = [c for c in found if c is not None and c.due]
    counts = dict.fromkeys(GC_ACTIONS, 0)
    if mode == "dry-run":
        counts["dry-run"] = len(due)
        report.orphans_found = [c.alias for c in due]
        seen = frozenset(str(c.key_id) for c in due)
        if due and _last_dry_run.get(tier_name) != seen:
            await _announce(svc, tier_name, "dry-run", due)
        _last_dry_run[tier_name] = seen
    elif due:
        tokens = [c.token for c in due if c.token]
        try:
            await svc.litellm.key_delete(tokens=tokens)
        except Exception as error:  # reported; the next resync tries again
            counts["failed"] = len(due)
            log.warning("tier %s: revoking %d orphaned key(s) failed: %s", tier_name, len(due), error)
            await _announce(svc, tier_name, "failed", due)
        else:
            counts["revoked"] = len(due)
            report.orphans_deleted = [c.alias for c in due]
            await _announce(svc, tier_name, "revoked", due)
    for action, count in counts.items():
        metrics.ORPHAN_KEYS.labels(tier=tier_name, action=action).set(count)
    return due


async def _announce(svc: Services, tier_name: str, action: str, due: list[adoption.GcCandidate]) -> None:
    """A log line with the structured report, and an Event on the GatewayTier."""
    log.info(
        "key gc tier=%s action=%s count=%d keys=%s",
        tier_name,
        action,
        len(due),
        json.dumps([c.row() for c in due], separators=(",", ":")),
    )
    try:
        body = await svc.kube.get_object(TIER_PLURAL, tier_name)
    except Exception as error:  # the Event is informative; the log line above has the report
        log.warning("tier %s: no Event for the key gc report: %s", tier_name, error)
        return
    uid = str(((body or {}).get("metadata") or {}).get("uid") or "")
    reason = {"dry-run": REASON_FOUND, "revoked": REASON_REVOKED, "failed": REASON_FAILED}[action]
    type_: EventType = "Normal" if action == "revoked" else "Warning"
    svc.events(TIER_KIND, ObjectRef(name=tier_name, uid=uid), type_, reason, gc_message(action, due))
