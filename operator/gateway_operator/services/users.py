"""GatewayUser -> LiteLLM user + exactly one key + a Secret holding that key.

Crash safety rests on one ordering rule: the key value is minted here and written to the Secret
BEFORE LiteLLM learns about it. Whatever step the operator dies after, the next run finds one of:
- Secret without a registered key          -> register the Secret's value;
- Secret and a matching key under the alias -> nothing to do (or an update if fields drifted);
- Secret and a different key under the alias (Secret lost and re-minted) -> rotate: retire the old key
  (rename + block), register the Secret's value with the old spend, delete the old key;
- a retired key without a live one (died mid-rotation) -> register, carrying the retired key's spend.
Every write is preceded by a read and skipped when the actual state already matches.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from gateway_operator import adoption, budgets, metrics, naming
from gateway_operator import conditions as cond
from gateway_operator import desired as want
from gateway_operator import rotation as rot
from gateway_operator.clients.kubernetes import K8sConflict, SecretView
from gateway_operator.clients.litellm import Conflict, LiteLLMError, UserRow
from gateway_operator.models import (
    API_VERSION,
    MANAGED_BY,
    USER_KIND,
    USER_PLURAL,
    ConditionStatus,
    GatewayUserStatus,
    KeyRecord,
    TierView,
    UserView,
)
from gateway_operator.services import rotation as rotation_service
from gateway_operator.services.core import Services, looks_minted, mint_key

log = logging.getLogger(__name__)

SECRET_COMPONENT = "user-key"
REASON_LITELLM_USER_KEPT = "LiteLLMUserKept"


def lock_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


# --- Secret helpers -------------------------------------------------------------------------------------


def owner_references(user: UserView) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": USER_KIND,
            "name": user.ref.name,
            "uid": user.ref.uid,
            "controller": True,
        }
    ]


def is_ours(secret: SecretView, user: UserView) -> bool:
    """Ours: labelled by us AND owned by a GatewayUser of this name (a previous incarnation's uid is
    adopted, since its Secret would otherwise block the name forever)."""
    if secret.labels.get(naming.LABEL_MANAGED_BY) != MANAGED_BY:
        return False
    return any(
        ref.get("kind") == USER_KIND and ref.get("name") == user.ref.name for ref in secret.owner_references
    )


# Fields a rotation adds next to the key (services/rotation.py); a key write keeps them.
ROTATION_FIELDS = (naming.SECRET_PREVIOUS_API_KEY, naming.SECRET_PENDING_API_KEY)


def secret_data(svc: Services, value: str) -> dict[str, str]:
    base_url = svc.settings.public_url
    return {
        naming.SECRET_API_KEY: value,
        naming.SECRET_BASE_URL: base_url,
        naming.SECRET_OPENAI_API_KEY: value,
        naming.SECRET_OPENAI_BASE_URL: base_url,
    }


def _labels() -> dict[str, str]:
    return {naming.LABEL_MANAGED_BY: MANAGED_BY, naming.LABEL_COMPONENT: SECRET_COMPONENT}


def _annotations(user: UserView) -> dict[str, str]:
    assert user.ref.namespace is not None
    return {
        naming.ANNOTATION_USER: user.ref.name,
        naming.ANNOTATION_KEY_ALIAS: naming.key_alias(user.ref.namespace, user.ref.name),
    }


def _secret_current(svc: Services, secret: SecretView, user: UserView) -> bool:
    value = secret.data.get(naming.SECRET_API_KEY, "")
    owners_ok = any(ref.get("uid") == user.ref.uid for ref in secret.owner_references)
    labels_ok = all(secret.labels.get(k) == v for k, v in _labels().items())
    data = {k: v for k, v in secret.data.items() if k not in ROTATION_FIELDS}
    return owners_ok and labels_ok and data == secret_data(svc, value)


async def write_secret(
    svc: Services,
    user: UserView,
    name: str,
    value: str,
    existing: SecretView | None,
    carry: SecretView | None = None,
) -> SecretView:
    """Create or replace the user's Secret with ``value``, keeping the rotation's fields and record (from
    ``existing``, or from ``carry``: the Secret of a previous name)."""
    assert user.ref.namespace is not None
    source = existing or carry
    kept = {k: v for k, v in (source.data if source else {}).items() if k in ROTATION_FIELDS}
    record = rot.record_annotations(rot.read_record(carry.annotations)) if carry is not None else {}
    kwargs: dict[str, Any] = {
        "data": {**secret_data(svc, value), **kept},
        "labels": _labels(),
        "annotations": {**record, **_annotations(user)},
        "owner_references": owner_references(user),
    }
    if existing is None:
        return await svc.kube.create_secret(user.ref.namespace, name, **kwargs)
    return await svc.kube.replace_secret(existing, **kwargs)


# --- LiteLLM user -----------------------------------------------------------------------------------------


def membership_enabled(svc: Services) -> bool:
    """TEAM_MEMBERSHIP (``settings.team_membership``, off by default): each LiteLLM user is a member of its
    tier's team. A key with a team and a user makes LiteLLM's auth look up that membership row on every
    request, and a missing row is not cached; but a member's /user/info lists every key of the team
    (aliases, hashes, emails, spend) and /key/info answers for teammates' keys."""
    return svc.settings.team_membership


async def read_user(svc: Services, user_id: str, *, member: bool) -> UserRow | None:
    # A member's /user/info embeds every key of each of its teams (O(tier size) per call): read the row
    # alone then (/v2/user/info). Otherwise /user/info, which the no-op path has always read.
    if member:
        return await svc.litellm.user_row(user_id)
    return await svc.litellm.user_info(user_id)


async def ensure_litellm_user(svc: Services, desired: want.DesiredUser, *, fresh: bool) -> tuple[str, ...]:
    """Converge the user row (and, when managed, its membership of the tier's team: joined here, before
    the key moves in). Returns the other tier teams the user is still a member of, to leave once its key
    has left them (``leave_teams``)."""
    if fresh:
        try:
            await _create_user(svc, desired)
            return ()
        except Conflict:
            pass  # exists already (earlier attempt, or a leftover): compare below
    actual = await read_user(svc, desired.user_id, member=desired.team_id is not None)
    if actual is None:
        # /user/new also answers 409 for an existing email under another user_id: raised.
        await _create_user(svc, desired)
        return ()
    changes = want.user_changes(desired, actual)
    if changes:
        await svc.litellm.user_update(desired.user_id, changes)
    membership = want.membership_changes(desired, actual.teams)
    if membership.join is not None:
        await svc.litellm.team_member_add(membership.join, desired.user_id)
    return membership.leave


async def _create_user(svc: Services, desired: want.DesiredUser) -> None:
    teams = await svc.litellm.user_new(desired.create_body())
    if desired.team_id is not None and desired.team_id not in teams:
        # /user/new still answers 200 when its member add failed (LiteLLM logs it and goes on; measured:
        # 23 of 300 under a burst, its 5 s transaction timed out waiting for the team's lock).
        await svc.litellm.team_member_add(desired.team_id, desired.user_id)


async def leave_teams(svc: Services, user_id: str, teams: tuple[str, ...]) -> None:
    """Leave tier teams the user no longer belongs to (after a tier change), each only once none of the
    user's keys is left in it: /team/member_delete deletes the member's keys in the team, and one still
    there is a rotated-out key in its grace period or a key that is not ours. The membership then stays
    until a later reconcile finds the team empty."""
    for team_id in teams:
        page = await svc.litellm.key_list(user_id=user_id, team_id=team_id, size=10)
        if page.keys or page.total_count:
            log.info(
                "LiteLLM user stays a member of %s: %d of its key(s) are still there (%s)",
                team_id,
                max(page.total_count, len(page.keys)),
                ", ".join(str(naming.key_id(k.token)) for k in page.keys),
            )
            continue
        await svc.litellm.team_member_delete(team_id, user_id)


# --- the key ----------------------------------------------------------------------------------------------


def _apply(record: KeyRecord, changes: dict[str, Any]) -> KeyRecord:
    update = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items()}
    return record.model_copy(update=update)


async def _update_key(svc: Services, desired: want.DesiredKey, actual: KeyRecord) -> dict[str, Any]:
    """Write the fields that differ (nothing if none) and return them."""
    assert actual.token is not None
    changes = want.key_changes(desired, actual)
    if "team_id" in changes and actual.team_id is not None:
        # LiteLLM checks a move to another team against the key's CURRENT models and requires the key's
        # user to be a team member. Unless TEAM_MEMBERSHIP is on, users are not team members (members
        # see every teammate's key through /user/info), so the key first drops models ("all of its
        # team's", which equals its tier's models) and user, then moves with both set again.
        await svc.litellm.key_update(actual.token, {"models": [], "user_id": None})
        changes = want.key_changes(desired, actual.model_copy(update={"models": (), "user_id": None}))
    if changes:
        await svc.litellm.key_update(actual.token, changes)
    return changes


async def _generate(svc: Services, desired: want.DesiredKey, value: str, spend: float = 0.0) -> KeyRecord:
    record = await svc.litellm.key_generate(desired.generate_body(value, spend=spend))
    token = record.token or naming.hash_key(value)
    return record.model_copy(update={"token": token, "spend": spend})


async def _rotate(
    svc: Services, user: UserView, desired: want.DesiredKey, old: KeyRecord, value: str
) -> KeyRecord:
    """Replace ``old`` (under our alias) by the Secret's ``value``, keeping spend; old ends revoked."""
    assert old.token is not None
    retired = naming.retired_alias(desired.key_alias)
    try:
        await svc.litellm.key_update(old.token, {"key_alias": retired, "blocked": True})
    except Conflict:
        # A retired key from an interrupted earlier rotation holds the alias; its spend was carried
        # over already (it is only left behind after the new key exists).
        await svc.litellm.key_delete(aliases=[retired])
        await svc.litellm.key_update(old.token, {"key_alias": retired, "blocked": True})
    record = await _generate(svc, desired, value, spend=old.spend)
    await svc.litellm.key_delete(tokens=[old.token])
    svc.events(
        USER_KIND,
        user.ref,
        "Normal",
        "KeyRotated",
        f"key {naming.key_id(old.token)} revoked and replaced by {naming.key_id(record.token)} "
        f"(spend {old.spend:.4f} USD carried over)",
    )
    return record


async def ensure_key(
    svc: Services,
    user: UserView,
    desired: want.DesiredKey,
    secret_name: str,
    secret: SecretView | None,
) -> tuple[KeyRecord, SecretView]:
    """Converge to one live key under the alias whose value is the one in the Secret."""
    value = secret.data.get(naming.SECRET_API_KEY) if secret is not None else None
    fresh = user.status.key_id is None
    if not looks_minted(value):
        value = mint_key()
        secret = await write_secret(svc, user, secret_name, value, secret)
        if fresh:
            try:
                record = await _generate(svc, desired, value)
            except Conflict:
                pass  # the alias holds a key after all: handled below like a lost Secret
            else:
                svc.events(
                    USER_KIND,
                    user.ref,
                    "Normal",
                    "KeyCreated",
                    f"key {naming.key_id(record.token)} created; Secret {secret_name} holds it",
                )
                return record, secret
    assert value is not None and secret is not None
    token = naming.hash_key(value)

    current = await svc.litellm.key_by_alias(desired.key_alias)
    if current is not None and current.token == token:
        rotated_from = rot.read_record(secret.annotations).rotated_from
        graceful = rotated_from is not None and rotated_from == user.status.key_id
        if user.status.key_id != naming.key_id(token) and not graceful:
            # Status lags the key: we died right after creating or rotating it. A rotation may have
            # left its retired key behind (renamed and blocked, spend already carried over). (Not after a
            # graceful rotation: its retired key is still valid, services/rotation.py revokes it.)
            await svc.litellm.key_delete(aliases=[naming.retired_alias(desired.key_alias)])
        changes = await _update_key(svc, desired, current)
        if changes:
            current = _apply(current, changes)
            svc.events(
                USER_KIND,
                user.ref,
                "Normal",
                "KeyUpdated",
                f"key {naming.key_id(token)} updated: {', '.join(sorted(changes))}",
            )
        return current, secret
    if current is not None:
        policy = adoption.effective_policy(adoption.user_policy(user.spec), svc.settings.adoption_policy)
        action = adoption.decide(current, user.ref.uid, policy)
        if action is adoption.Action.LEAVE:
            raise adoption.KeyConflictError(adoption.conflict_message(current, desired.key_alias))
        record = await _rotate(svc, user, desired, current, value)
        if action is adoption.Action.ADOPT:
            message = adoption.adopted_message(current, record.token)
            svc.events(USER_KIND, user.ref, "Normal", adoption.REASON_KEY_ADOPTED, message)
        return record, secret

    # Nothing under the alias. Is the Secret's value known to LiteLLM at all?
    known = await svc.litellm.key_info(token)
    if known is not None and known.status != "deleted":
        # Registered under another alias or user (changed in LiteLLM's UI): take it back.
        changes = await _update_key(svc, desired, known)
        svc.events(
            USER_KIND,
            user.ref,
            "Warning",
            "KeyRepaired",
            f"key {naming.key_id(token)} had drifted ({', '.join(sorted(changes))}); restored",
        )
        return _apply(known, changes), secret
    if known is not None:
        # Deleted in LiteLLM (e.g. revoked in the UI): never resurrect that value; mint a new one.
        value = mint_key()
        secret = await write_secret(svc, user, secret_name, value, secret)
        record = await _generate(svc, desired, value, spend=known.spend)
        svc.events(
            USER_KIND,
            user.ref,
            "Warning",
            "KeyRecreated",
            f"key {naming.key_id(token)} was deleted in LiteLLM; new key {naming.key_id(record.token)}",
        )
        return record, secret

    # Never registered (the operator died after writing the Secret), maybe mid-rotation.
    retired = await svc.litellm.key_by_alias(naming.retired_alias(desired.key_alias))
    rotated = None
    if retired is None and user.status.key_id:
        # A scheduled rotation renamed the old key, then the Secret (and its pending key) was lost: carry
        # that key's spend; it stays in its grace period (revoked by the GC after llmgw_retire_after).
        rotated = await svc.litellm.key_by_alias(naming.retired_alias(desired.key_alias, user.status.key_id))
    spend = retired.spend if retired else 0.0
    if rotated is not None:
        spend = rot.carried_spend(rotated.metadata, rotated.spend)
    record = await _generate(svc, desired, value, spend=spend)
    if retired is not None and retired.token:
        await svc.litellm.key_delete(tokens=[retired.token])
    svc.events(
        USER_KIND,
        user.ref,
        "Normal",
        "KeyCreated",
        f"key {naming.key_id(record.token)} registered; Secret {secret_name} holds it",
    )
    return record, secret


# --- reconcile / delete -----------------------------------------------------------------------------------


def _ready_status(
    user: UserView,
    status: ConditionStatus,
    reason: str,
    message: str,
    **fields: Any,
) -> GatewayUserStatus:
    base = user.status.model_dump(by_alias=False)
    base.update(fields)
    base["conditions"] = cond.set_condition(
        user.status.conditions, cond.READY, status, reason, message, user.ref.generation
    )
    base["observed_generation"] = user.ref.generation
    return GatewayUserStatus.model_validate(base)


def status_from_key(user: UserView, tier: TierView, secret_name: str, key: KeyRecord) -> GatewayUserStatus:
    ready, reason, message = cond.user_ready(
        suspended=bool(key.blocked), spend=key.spend, max_budget=key.max_budget, secret_name=secret_name
    )
    reset_at = key.budget_reset_at
    if reset_at is None and not user.status.budget_reset_at and key.budget_duration == want.BUDGET_DURATION:
        reset_at = want.next_budget_reset(datetime.now(UTC))  # /key/generate does not return it
    if reset_at is not None and reset_at.tzinfo is None:
        reset_at = reset_at.replace(tzinfo=UTC)
    reset = reset_at.isoformat().replace("+00:00", "Z") if reset_at else None
    status = _ready_status(
        user,
        ready,
        reason,
        message,
        tier=tier.name,
        key_alias=key.key_alias,
        key_id=naming.key_id(key.token),
        secret_name=secret_name,
        spend_usd=round(key.spend, 6),
        max_budget_usd=key.max_budget,
        budget_reset_at=reset or user.status.budget_reset_at,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        models=tuple(sorted(key.models)),
    )
    level = budgets.budget_level(key.spend, key.max_budget)
    return status.model_copy(
        update={
            "budget_alert": budgets.decide_alert(
                user.status.budget_alert, level, reset or user.status.budget_reset_at
            ),
            "conditions": budgets.apply_warning(
                status.conditions, level, key.spend, key.max_budget, user.ref.generation
            ),
        }
    )


def announce_budget(svc: Services, user: UserView, status: GatewayUserStatus) -> None:
    """After ``status`` was written: one Event per threshold crossed per budget period."""
    level = budgets.newly_crossed(user.status.budget_alert, status.budget_alert)
    if level is None:
        return
    metrics.BUDGET_ALERTS.labels(threshold=str(level)).inc()
    svc.events(
        USER_KIND,
        user.ref,
        "Warning",
        budgets.reason_for(level),
        budgets.event_message(level, status.spend_usd or 0.0, status.max_budget_usd, status.budget_reset_at),
    )


def not_ready(user: UserView, reason: str, message: str) -> GatewayUserStatus:
    return _ready_status(user, "False", reason, message)


async def write_status(svc: Services, user: UserView, status: GatewayUserStatus) -> bool:
    """Patch status only when it differs from what the object carries (True if written)."""
    new = status.to_k8s()
    old = user.status.to_k8s()
    new.pop("lastSyncTime", None)
    old.pop("lastSyncTime", None)
    if new == old:
        return False
    patch: dict[str, Any] = {key: None for key in old if key not in new}  # a merge patch deletes with null
    patch.update(new)
    patch["lastSyncTime"] = cond.now_iso()
    return await svc.kube.patch_status(USER_PLURAL, user.ref.name, user.ref.namespace, patch)


async def reconcile_user(
    svc: Services,
    user: UserView,
    tier: TierView | None,
    *,
    email_owner: str | None = None,
) -> GatewayUserStatus:
    """Converge one GatewayUser and write its status. ``email_owner`` names another GatewayUser that
    already holds this email (each email maps to one LiteLLM user, owned by one GatewayUser)."""
    assert user.ref.namespace is not None
    alias = naming.key_alias(user.ref.namespace, user.ref.name)
    secret_name = naming.secret_name(user.ref.name, user.spec.secret_name)

    if tier is None:
        status = not_ready(user, cond.TIER_NOT_FOUND, f"GatewayTier {user.spec.tier!r} does not exist")
    elif not tier.team_ready:
        status = not_ready(user, cond.TIER_NOT_READY, f"GatewayTier {tier.name!r} is not provisioned yet")
    elif email_owner is not None:
        status = not_ready(
            user, cond.EMAIL_CONFLICT, f"email {user.spec.email} already belongs to GatewayUser {email_owner}"
        )
    else:
        try:
            status = await _converge(svc, user, tier, alias, secret_name)
        except adoption.KeyConflictError as conflict:
            status = not_ready(user, adoption.REASON_KEY_CONFLICT, str(conflict))
    if await write_status(svc, user, status):
        condition = cond.get_condition(status.conditions, cond.READY)
        previous = cond.get_condition(user.status.conditions, cond.READY)
        if (
            condition
            and condition.status == "False"
            and condition.reason != cond.BUDGET_EXCEEDED  # announce_budget posts it, once per period
            and (previous is None or previous.reason != condition.reason)
        ):
            svc.events(USER_KIND, user.ref, "Warning", condition.reason, condition.message)
        announce_budget(svc, user, status)
    return status


async def _converge(
    svc: Services, user: UserView, tier: TierView, alias: str, secret_name: str
) -> GatewayUserStatus:
    assert user.ref.namespace is not None
    secret = await svc.kube.get_secret(user.ref.namespace, secret_name)
    if secret is not None and not is_ours(secret, user):
        return not_ready(
            user,
            cond.SECRET_CONFLICT,
            f"Secret {secret_name} exists and is not managed by this GatewayUser; "
            "delete it or set spec.secretName to another name",
        )
    if secret is not None and secret.deleting:
        raise K8sConflict(f"Secret {secret_name} is being deleted")
    if secret is None:
        secret = await _move_secret(svc, user, secret_name)

    litellm_user = want.desired_user(user.spec, tier.spec, tier.name, member=membership_enabled(svc))
    stale_teams = await ensure_litellm_user(svc, litellm_user, fresh=user.status.key_id is None)
    desired = want.desired_key(user.ref, user.spec, tier.spec)
    secret = await rotation_service.advance(svc, user, desired, secret)
    key, secret = await ensure_key(svc, user, desired, secret_name, secret)
    if stale_teams:
        await leave_teams(svc, litellm_user.user_id, stale_teams)
    if not _secret_current(svc, secret, user):
        secret = await write_secret(svc, user, secret_name, secret.data[naming.SECRET_API_KEY], secret)
    await _drop_old_secret(svc, user, secret_name)
    status = status_from_key(user, tier, secret_name, key)
    record = rot.read_record(secret.annotations)
    created = rotation_service.created_at(secret, user)
    return status.model_copy(update=rot.status_fields(user.spec.key_rotation, record, created))


async def _move_secret(svc: Services, user: UserView, secret_name: str) -> SecretView | None:
    """spec.secretName changed: carry the key value over to the new name (same key, no rotation), with
    a rotation's previous key and record."""
    old_name = user.status.secret_name
    if not old_name or old_name == secret_name:
        return None
    assert user.ref.namespace is not None
    old = await svc.kube.get_secret(user.ref.namespace, old_name)
    if old is None or not is_ours(old, user) or not looks_minted(old.data.get(naming.SECRET_API_KEY)):
        return None
    return await write_secret(svc, user, secret_name, old.data[naming.SECRET_API_KEY], None, carry=old)


async def _drop_old_secret(svc: Services, user: UserView, secret_name: str) -> None:
    """After spec.secretName changed, delete the Secret we wrote under the previous name."""
    old_name = user.status.secret_name
    if not old_name or old_name == secret_name:
        return
    assert user.ref.namespace is not None
    old = await svc.kube.get_secret(user.ref.namespace, old_name)
    if old is not None and is_ours(old, user):
        await svc.kube.delete_secret(user.ref.namespace, old_name, uid=old.uid)


async def delete_user(svc: Services, user: UserView, *, delete_litellm_user: bool = True) -> None:
    """Finalizer: revoke our key(s) (the live alias and every retired one), then the LiteLLM user, then our
    Secret(s). ``delete_litellm_user`` False: another GatewayUser holds the same email and takes the
    LiteLLM user over. Every step is a no-op when done already (a retry after a crash)."""
    assert user.ref.namespace is not None
    alias = naming.key_alias(user.ref.namespace, user.ref.name)
    secret = await svc.kube.get_secret(
        user.ref.namespace, naming.secret_name(user.ref.name, user.spec.secret_name)
    )
    ours = secret if secret is not None and is_ours(secret, user) else None
    rotated = await rotation_service.retired_aliases(svc, user, ours)
    aliases = [alias, naming.retired_alias(alias), *rotated]
    if adoption.may_hold_foreign_key(user.status):
        holder = await svc.litellm.key_by_alias(alias)
        if holder is not None and not adoption.is_ours(holder):
            aliases.remove(alias)  # left alone (adoption policy Ignore): not ours to revoke
    user_id = naming.user_id(user.spec.email) if user.spec.email else None
    held = await _user_keys(svc, user_id) if delete_litellm_user and user_id else []
    mine = [k for k in held if _revoked_with(k.key_alias, alias, aliases)]
    await svc.litellm.key_delete(aliases=aliases)
    # Retired keys the Secret no longer names (e.g. `<alias>:retired-<id>` after the Secret was lost).
    missed = [k.token for k in mine if k.token and k.key_alias not in aliases]
    if missed:
        await svc.litellm.key_delete(tokens=missed)
    if delete_litellm_user and user_id:
        await _retire_litellm_user(svc, user, user_id, [k for k in held if k not in mine])
    names = {naming.secret_name(user.ref.name, user.spec.secret_name)}
    if user.status.secret_name:
        names.add(user.status.secret_name)
    for name in sorted(names):
        secret = await svc.kube.get_secret(user.ref.namespace, name)
        if secret is not None and is_ours(secret, user):
            await svc.kube.delete_secret(user.ref.namespace, name, uid=secret.uid)


def _revoked_with(key_alias: str | None, alias: str, aliases: list[str]) -> bool:
    """A key the deletion revokes: one of ``aliases``, or any retired alias of this user's key."""
    if not key_alias:
        return False
    return key_alias in aliases or key_alias.startswith(naming.retired_alias(alias))


async def _user_keys(svc: Services, user_id: str) -> list[KeyRecord]:
    keys: list[KeyRecord] = []
    page = 1
    while True:
        result = await svc.litellm.key_list(user_id=user_id, page=page, size=100)
        keys.extend(k for k in result.keys if k.user_id in (None, user_id))
        if page >= result.total_pages or not result.keys:
            return keys
        page += 1


async def _retire_litellm_user(svc: Services, user: UserView, user_id: str, foreign: list[KeyRecord]) -> None:
    """Delete the LiteLLM user row, unless keys we do not own are left under it (/user/delete deletes
    all of a user's keys). Then the row stays, and so does its membership of any team holding one of
    those keys (/team/member_delete deletes the member's keys in that team); it leaves our other tier
    teams."""
    if not foreign:
        await svc.litellm.user_delete([user_id])  # also ends its team memberships
        return
    row = await read_user(svc, user_id, member=membership_enabled(svc))
    kept = {k.team_id for k in foreign if k.team_id}
    for team_id in sorted(t for t in (row.teams if row else ()) if naming.tier_from_team_id(t) is not None):
        if team_id not in kept:
            await svc.litellm.team_member_delete(team_id, user_id)
    ids = ", ".join(sorted(str(naming.key_id(k.token)) for k in foreign))
    log.warning(
        "GatewayUser %s/%s deleted; LiteLLM user kept: it holds %d key(s) not managed by it (%s)",
        user.ref.namespace,
        user.ref.name,
        len(foreign),
        ids,
    )
    svc.events(
        USER_KIND,
        user.ref,
        "Warning",
        REASON_LITELLM_USER_KEPT,
        f"our key(s) revoked; the LiteLLM user is kept because it holds {len(foreign)} key(s) this "
        f"GatewayUser does not manage: {ids}",
    )


async def report_error(svc: Services, user: UserView, error: Exception) -> None:
    """Ready=False with the reason of a failed reconcile (best effort: the backend may be what failed)."""
    from gateway_operator.clients.litellm import BackendUnavailable, Unauthorized

    if isinstance(error, BackendUnavailable | Unauthorized):
        reason = cond.BACKEND_UNAVAILABLE
    elif isinstance(error, LiteLLMError):
        reason = cond.BACKEND_REJECTED
    else:
        reason = cond.RECONCILING
    try:
        await write_status(svc, user, not_ready(user, reason, str(error)))
    except Exception as write_error:  # the status is informative; the retry is what matters
        log.warning(
            "could not record %s on %s/%s: %s", reason, user.ref.namespace, user.ref.name, write_error
        )
