"""Key rotation, the I/O: diff the Secret's record and LiteLLM against what rotation.py says is due,
and apply the next step. Runs inside a user's reconcile (under its lock), before the key is converged.

Crash safety: every step is one write whose effect the next run can observe, in this order:
1. mint: the new value goes into the Secret's ``pending-api-key`` with the trigger and the old key's
   expiry (one Secret write; nothing else knows the value yet, apps still read ``api-key``);
2. retire: the old key is renamed to ``<alias>:retired-<keyId>`` with ``llmgw_retire_after`` and the
   spend carried, and keeps working (one /key/update);
3. generate: the pending value is registered under the live alias with the old spend (/key/generate);
4. swap: the Secret's ``api-key`` becomes the new value, ``previous-api-key`` the old one, and the
   record notes the retired key, the handled trigger and a pending rollout (one Secret write);
5. rollout: opted-in Deployments get a new pod-template annotation; the record's flag is cleared;
6. revoke (after the grace period): the retired key's spend since step 2 is added to the live key
   (marked on it in the same write), the retired key deleted, ``previous-api-key`` dropped.
A restarted operator reads ``pending-api-key`` and the live alias and resumes at the right step
(``rotation.pending_step``), so a rotation completes exactly once and never leaves two live keys.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from gateway_operator import naming
from gateway_operator import rotation as rot
from gateway_operator.clients.kubernetes import K8sError, SecretView
from gateway_operator.desired import DesiredKey
from gateway_operator.models import DEFAULT_GRACE_PERIOD, USER_KIND, KeyRecord, UserView
from gateway_operator.services.core import Services, looks_minted, mint_key

log = logging.getLogger(__name__)


def now() -> datetime:
    return datetime.now(UTC)


def created_at(secret: SecretView, user: UserView) -> datetime | None:
    """When the current key came to be, for a user never rotated: the Secret's (or the CR's) birth."""
    return rot.parse_time(secret.created) or rot.parse_time(user.ref.creation_timestamp)


async def _write(svc: Services, secret: SecretView, data: dict[str, str], record: rot.Record) -> SecretView:
    return await svc.kube.replace_secret(
        secret,
        data=data,
        labels=secret.labels,
        annotations=rot.record_annotations(record),
        owner_references=list(secret.owner_references),
    )


async def advance(
    svc: Services, user: UserView, desired: DesiredKey, secret: SecretView | None
) -> SecretView | None:
    """Start a due rotation, finish a started one, roll out, revoke expired retired keys. Makes no API
    call at all when none of these is due (the common case)."""
    if secret is None or not looks_minted(secret.data.get(naming.SECRET_API_KEY)):
        return secret  # nothing to rotate yet: the key reconcile creates or repairs it first
    at = now()
    record = rot.read_record(secret.annotations)
    if record.pending is None:
        rotation = user.spec.key_rotation
        trigger = rot.due_trigger(
            rotation, user.rotate_at, record, user.status.handled_rotate_at, created_at(secret, user), at
        )
        if trigger is not None:
            grace = rotation.grace_period if rotation is not None else DEFAULT_GRACE_PERIOD
            record = rot.begin(record, trigger, at, grace)
            data = {**secret.data, naming.SECRET_PENDING_API_KEY: mint_key()}
            secret = await _write(svc, secret, data, record)
    if record.pending is not None:
        secret = await _complete(svc, user, desired, secret, record)
        record = rot.read_record(secret.annotations)
    if record.rollout_key_id is not None:
        secret = await _rollout(svc, user, secret, record)
        record = rot.read_record(secret.annotations)
    revoke = rot.expired(record, at)
    if revoke or (record.previous_expires_at is not None and rot.previous_expired(record, at)):
        secret = await _revoke(svc, user, desired, secret, record, revoke, at)
    return secret


async def _complete(
    svc: Services, user: UserView, desired: DesiredKey, secret: SecretView, record: rot.Record
) -> SecretView:
    assert record.pending is not None
    current = secret.data[naming.SECRET_API_KEY]
    pending = secret.data.get(naming.SECRET_PENDING_API_KEY, "")
    alias = desired.key_alias
    if not looks_minted(pending):
        return await _abandon(svc, user, secret, record, "the pending key in the Secret is unreadable")
    live = await svc.litellm.key_by_alias(alias)
    step = rot.pending_step(live.token if live else None, naming.hash_key(current), naming.hash_key(pending))
    if step is rot.Step.ABANDON:
        return await _abandon(svc, user, secret, record, "the live alias holds a key the Secret does not")
    old_id = naming.key_id(naming.hash_key(current)) or ""
    carried = 0.0
    if step is rot.Step.RETIRE:
        assert live is not None and live.token is not None
        carried = live.spend
        await svc.litellm.key_update(
            live.token,
            {
                "key_alias": naming.retired_alias(alias, old_id),
                "metadata": rot.retire_metadata(live.metadata, alias, carried, record.pending.expires_at),
            },
        )
        step = rot.Step.GENERATE
    elif step is rot.Step.GENERATE:
        # Resumed after the rename: the retired key knows what was carried.
        old = await svc.litellm.key_info(naming.hash_key(current))
        carried = rot.carried_spend(old.metadata, old.spend) if old is not None else 0.0
    if step is rot.Step.GENERATE:
        await svc.litellm.key_generate(desired.generate_body(pending, spend=carried))
    new_id = naming.key_id(naming.hash_key(pending)) or ""
    data = {
        **secret.data,
        naming.SECRET_API_KEY: pending,
        naming.SECRET_OPENAI_API_KEY: pending,
        naming.SECRET_PREVIOUS_API_KEY: current,
    }
    data.pop(naming.SECRET_PENDING_API_KEY, None)
    swapped = rot.swapped(record, old_id, new_id, now())
    secret = await _write(svc, secret, data, swapped)
    trigger = record.pending.trigger
    why = "on schedule" if trigger == rot.TRIGGER_SCHEDULE else f"as requested ({rot.ANNOTATION_ROTATE_AT})"
    svc.events(
        USER_KIND,
        user.ref,
        "Normal",
        "KeyRotated",
        f"key {old_id} replaced by {new_id} {why}; the old key keeps working until "
        f"{rot.iso(record.pending.expires_at)} (Secret field {naming.SECRET_PREVIOUS_API_KEY})"
        + (f"; spend {carried:.4f} USD carried over" if step is rot.Step.GENERATE else ""),
    )
    return secret


async def _abandon(
    svc: Services, user: UserView, secret: SecretView, record: rot.Record, why: str
) -> SecretView:
    """Drop a started rotation that cannot go on; the key reconcile then repairs whatever happened."""
    data = {k: v for k, v in secret.data.items() if k != naming.SECRET_PENDING_API_KEY}
    secret = await _write(svc, secret, data, replace(record, pending=None))
    svc.events(USER_KIND, user.ref, "Warning", "KeyRotationAbandoned", f"rotation abandoned: {why}")
    return secret


async def _rollout(svc: Services, user: UserView, secret: SecretView, record: rot.Record) -> SecretView:
    assert user.ref.namespace is not None and record.rollout_key_id is not None
    rolled: list[str] = []
    try:
        for deployment in await svc.kube.list_deployments(user.ref.namespace):
            if not rot.wants_rollout(deployment.annotations, secret.name):
                continue
            if deployment.template_annotations.get(rot.TEMPLATE_ANNOTATION) == record.rollout_key_id:
                continue  # rolled already (before a crash)
            if await svc.kube.patch_pod_template_annotations(
                user.ref.namespace, deployment.name, {rot.TEMPLATE_ANNOTATION: record.rollout_key_id}
            ):
                rolled.append(deployment.name)
    except K8sError as error:
        if error.status not in (401, 403):
            raise
        # No RBAC for Deployments: the rotation itself is done; say so once instead of retrying forever.
        svc.events(
            USER_KIND, user.ref, "Warning", "RolloutFailed", f"could not roll out Deployments: {error}"
        )
    if rolled:
        svc.events(
            USER_KIND, user.ref, "Normal", "RolloutTriggered", f"rolled out Deployment(s) {', '.join(rolled)}"
        )
    cleared = replace(record, rollout_key_id=None)
    return await _write(svc, secret, dict(secret.data), cleared)


async def _revoke(
    svc: Services,
    user: UserView,
    desired: DesiredKey,
    secret: SecretView,
    record: rot.Record,
    revoke: tuple[rot.Retired, ...],
    at: datetime,
) -> SecretView:
    alias = desired.key_alias
    live: KeyRecord | None = None
    if revoke:
        live = await svc.litellm.key_by_alias(alias)
    for retired in revoke:
        old = await svc.litellm.key_by_alias(naming.retired_alias(alias, retired.key_id))
        if old is None or old.token is None:
            continue  # revoked already
        extra = rot.grace_spend(old.spend, old.metadata)
        live_token = live.token if live is not None else None
        if extra > 0 and live is not None and live_token and retired.key_id not in rot.folded(live.metadata):
            # Spend and marker in one write: a crash before the delete below cannot add it twice.
            marked = {**live.metadata, rot.META_FOLDED: [*rot.folded(live.metadata), retired.key_id]}
            await svc.litellm.key_update(live_token, {"spend": live.spend + extra, "metadata": marked})
            live = live.model_copy(update={"metadata": marked, "spend": live.spend + extra})
        await svc.litellm.key_delete(tokens=[old.token])
        svc.events(
            USER_KIND,
            user.ref,
            "Normal",
            "RetiredKeyRevoked",
            f"retired key {retired.key_id} revoked at the end of its grace period"
            + (f"; its {extra:.4f} USD spent meanwhile added to the live key" if extra > 0 else ""),
        )
    remaining = rot.without(record, revoke, at)
    data = dict(secret.data)
    if remaining.previous_expires_at is None:
        data.pop(naming.SECRET_PREVIOUS_API_KEY, None)
    return await _write(svc, secret, data, remaining)


async def retired_aliases(svc: Services, user: UserView, secret: SecretView | None) -> list[str]:
    """Every retired alias the user may still have (for deletion): from the Secret's record and status."""
    assert user.ref.namespace is not None
    alias = naming.key_alias(user.ref.namespace, user.ref.name)
    ids = {r.key_id for r in user.status.retired_keys}
    if secret is not None:
        record = rot.read_record(secret.annotations)
        ids |= {r.key_id for r in record.retired}
        if record.pending is not None and user.status.key_id:
            ids.add(user.status.key_id)  # died mid-rotation, maybe after the rename
    elif user.status.key_id:
        ids.add(user.status.key_id)
    return [naming.retired_alias(alias, key_id) for key_id in sorted(ids)]
