"""Key rotation, the pure part: when a rotation is due, which step a half-done one is at, what the user
Secret records about past rotations, and when a retired key may be revoked.

A rotation replaces the live key by a new one without downtime (LiteLLM's /key/regenerate is Enterprise
only): mint the new value into the Secret's ``pending-api-key``, rename the old key to its retired alias
(it keeps working, tagged with its expiry), generate the new key under the live alias with the old
spend, then swap the Secret (new value live, old one in ``previous-api-key``). After the grace period the
retired key is revoked and any spend it made meanwhile is added to the live key. The Secret's annotations
are the durable record (see ``Record``); services/rotation.py does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from gateway_operator import naming
from gateway_operator.models import KeyRotation, RetiredKeyStatus, UserView

ANNOTATION_ROTATE_AT = "llmgateway.io/rotate-at"  # on a GatewayUser: rotate once per distinct value
ANNOTATION_ROLLOUT = "llmgateway.io/rotation-rollout"  # on a Deployment: Secret name(s), comma-separated
TEMPLATE_ANNOTATION = "llmgateway.io/rotated-key-id"  # set on an opted-in pod template: rolls it out

# The user Secret's record of rotations (never key material). Kubernetes merges annotations on our
# replace, so "absent" is written as an empty value.
SECRET_PENDING = "llmgateway.io/rotation-pending"  # "<trigger>|<old key's expiry>" while pending-api-key
SECRET_ROTATED_AT = "llmgateway.io/rotated-at"
SECRET_ROTATED_FROM = "llmgateway.io/rotated-from"  # id of the key the last rotation replaced
SECRET_HANDLED_ROTATE_AT = "llmgateway.io/rotate-at-handled"
SECRET_RETIRED_KEYS = "llmgateway.io/retired-keys"  # "<keyId>=<expiry>,..." (keys still in grace)
SECRET_PREVIOUS_EXPIRES = "llmgateway.io/previous-api-key-expires-at"
SECRET_ROLLOUT_PENDING = "llmgateway.io/rollout-pending"  # new key id until opted-in Deployments rolled

# Metadata of a retired key in LiteLLM (the orphan GC reads META_RETIRE_AFTER via retired_key_expiry).
META_RETIRE_AFTER = "llmgw_retire_after"
META_CARRIED_SPEND = "llmgw_carried_spend"
META_RETIRED_FROM = "llmgw_retired_from"
# Metadata of the live key: retired key ids whose grace-period spend was added to it (makes that once).
META_FOLDED = "llmgw_folded"

TRIGGER_SCHEDULE = "schedule"
TRIGGER_ANNOTATION = "annotation:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- parsing ----------------------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """ "720h", "30d", "1h30m", "0s" (the CRD's pattern); ValueError otherwise."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset; naive counts as UTC), None if absent or unparsable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- retired keys (shared with the orphan GC) -------------------------------------------------------------


def retired_key_expiry(alias: str | None, metadata: Mapping[str, Any] | None) -> datetime | None:
    """When a key rotated out by us may be revoked; None if it is not such a key (a live key, someone
    else's, or a lost Secret's one-off ``:retired`` key, which is revoked at once)."""
    if not naming.is_retired_alias(alias) or not metadata:
        return None
    value = metadata.get(META_RETIRE_AFTER)
    return parse_time(value) if isinstance(value, str) else None


def in_grace(alias: str | None, metadata: Mapping[str, Any] | None, now: datetime) -> bool:
    """True while a retired key must be left alone (the orphan GC must not delete it yet)."""
    expiry = retired_key_expiry(alias, metadata)
    return expiry is not None and now < expiry


def carried_spend(metadata: Mapping[str, Any], fallback: float) -> float:
    try:
        return float(metadata.get(META_CARRIED_SPEND, fallback))
    except (TypeError, ValueError):
        return fallback


def folded(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    value = metadata.get(META_FOLDED)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def retire_metadata(
    current: Mapping[str, Any], alias: str, spend: float, expires: datetime
) -> dict[str, Any]:
    return {
        **current,
        META_RETIRE_AFTER: iso(expires),
        META_CARRIED_SPEND: spend,
        META_RETIRED_FROM: alias,
    }


def grace_spend(retired_spend: float, metadata: Mapping[str, Any]) -> float:
    """What a retired key spent after it was rotated out (a budget reset meanwhile can make it
    negative: nothing to add then)."""
    return max(0.0, retired_spend - carried_spend(metadata, retired_spend))


# --- the Secret's record ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retired:
    key_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Pending:
    trigger: str
    expires_at: datetime  # when the key being replaced stops working


@dataclass(frozen=True)
class Record:
    rotated_at: datetime | None = None
    rotated_from: str | None = None
    handled_rotate_at: str | None = None
    retired: tuple[Retired, ...] = ()
    previous_expires_at: datetime | None = None
    pending: Pending | None = None
    rollout_key_id: str | None = None


def _parse_retired(text: str) -> tuple[Retired, ...]:
    found: list[Retired] = []
    for item in text.split(","):
        key_id, _, when = item.strip().partition("=")
        expires = parse_time(when)
        if key_id and expires is not None:
            found.append(Retired(key_id, expires))
    return tuple(found)


def _parse_pending(text: str) -> Pending | None:
    trigger, sep, when = text.rpartition("|")
    expires = parse_time(when)
    return Pending(trigger, expires) if sep and trigger and expires is not None else None


def read_record(annotations: Mapping[str, str]) -> Record:
    return Record(
        rotated_at=parse_time(annotations.get(SECRET_ROTATED_AT)),
        rotated_from=annotations.get(SECRET_ROTATED_FROM) or None,
        handled_rotate_at=annotations.get(SECRET_HANDLED_ROTATE_AT) or None,
        retired=_parse_retired(annotations.get(SECRET_RETIRED_KEYS, "")),
        previous_expires_at=parse_time(annotations.get(SECRET_PREVIOUS_EXPIRES)),
        pending=_parse_pending(annotations.get(SECRET_PENDING, "")),
        rollout_key_id=annotations.get(SECRET_ROLLOUT_PENDING) or None,
    )


def record_annotations(record: Record) -> dict[str, str]:
    pending = record.pending
    return {
        SECRET_ROTATED_AT: iso(record.rotated_at) if record.rotated_at else "",
        SECRET_ROTATED_FROM: record.rotated_from or "",
        SECRET_HANDLED_ROTATE_AT: record.handled_rotate_at or "",
        SECRET_RETIRED_KEYS: ",".join(f"{r.key_id}={iso(r.expires_at)}" for r in record.retired),
        SECRET_PREVIOUS_EXPIRES: iso(record.previous_expires_at) if record.previous_expires_at else "",
        SECRET_PENDING: f"{pending.trigger}|{iso(pending.expires_at)}" if pending else "",
        SECRET_ROLLOUT_PENDING: record.rollout_key_id or "",
    }


def begin(record: Record, trigger: str, now: datetime, grace: str) -> Record:
    return replace(record, pending=Pending(trigger, now + parse_duration(grace)))


def swapped(record: Record, old_key_id: str, new_key_id: str, now: datetime) -> Record:
    """The record once the Secret holds the new key (the rotation's last atomic step)."""
    assert record.pending is not None
    pending = record.pending
    handled = record.handled_rotate_at
    if pending.trigger.startswith(TRIGGER_ANNOTATION):
        handled = pending.trigger[len(TRIGGER_ANNOTATION) :]
    retired = tuple(r for r in record.retired if r.key_id != old_key_id)
    return Record(
        rotated_at=now,
        rotated_from=old_key_id,
        handled_rotate_at=handled,
        retired=(*retired, Retired(old_key_id, pending.expires_at)),
        previous_expires_at=pending.expires_at,
        pending=None,
        rollout_key_id=new_key_id,
    )


def expired(record: Record, now: datetime) -> tuple[Retired, ...]:
    return tuple(r for r in record.retired if r.expires_at <= now)


def without(record: Record, revoked: Iterable[Retired], now: datetime) -> Record:
    gone = {r.key_id for r in revoked}
    previous = record.previous_expires_at
    return replace(
        record,
        retired=tuple(r for r in record.retired if r.key_id not in gone),
        previous_expires_at=previous if previous is not None and previous > now else None,
    )


def previous_expired(record: Record, now: datetime) -> bool:
    return record.previous_expires_at is None or record.previous_expires_at <= now


# --- when ------------------------------------------------------------------------------------------------


def rotate_at_due(value: str | None, handled: Iterable[str | None], now: datetime) -> bool:
    """An on-demand request: due once its time has come (a value that is not a time: at once), and only
    if that exact value was not handled before."""
    if not value or value in set(handled):
        return False
    when = parse_time(value)
    return when is None or when <= now


def next_rotation(rotation: KeyRotation | None, last: datetime | None) -> datetime | None:
    if rotation is None or rotation.every is None or last is None:
        return None
    return last + parse_duration(rotation.every)


def due_trigger(
    rotation: KeyRotation | None,
    rotate_at: str | None,
    record: Record,
    status_handled: str | None,
    created: datetime | None,
    now: datetime,
) -> str | None:
    """Why a rotation should start now (``annotation:<value>`` or ``schedule``), None if none is due.
    ``created``: when the current key came to be, for a user that was never rotated."""
    if rotate_at_due(rotate_at, (record.handled_rotate_at, status_handled), now):
        return f"{TRIGGER_ANNOTATION}{rotate_at}"
    scheduled = next_rotation(rotation, record.rotated_at or created)
    if scheduled is not None and scheduled <= now:
        return TRIGGER_SCHEDULE
    return None


def status_fields(rotation: KeyRotation | None, record: Record, created: datetime | None) -> dict[str, Any]:
    """The rotation part of a GatewayUser's status, from the Secret's record."""
    scheduled = next_rotation(rotation, record.rotated_at or created)
    return {
        "last_rotation_time": iso(record.rotated_at) if record.rotated_at else None,
        "next_rotation_time": iso(scheduled) if scheduled else None,
        "handled_rotate_at": record.handled_rotate_at,
        "retired_keys": tuple(
            RetiredKeyStatus(key_id=r.key_id, expires_at=iso(r.expires_at)) for r in record.retired
        ),
    }


def next_action_at(user: UserView, now: datetime) -> datetime | None:
    """When this user next needs a reconcile for rotation work, from what the index holds (spec, status,
    annotation): no API call. None: nothing scheduled."""
    times: list[datetime] = []
    status = user.status
    if rotate_at_due(user.rotate_at, (status.handled_rotate_at,), datetime.max.replace(tzinfo=UTC)):
        times.append(parse_time(user.rotate_at) or _EPOCH)  # not a time: due, at a stable time
    rotation = user.spec.key_rotation
    if rotation is not None and rotation.every is not None:
        scheduled = parse_time(status.next_rotation_time)
        if scheduled is not None:
            times.append(scheduled)
    times += [t for t in (parse_time(r.expires_at) for r in status.retired_keys) if t is not None]
    return min(times, default=None)


def due_users(users: Iterable[UserView], now: datetime) -> tuple[list[UserView], datetime | None]:
    """(users whose rotation work is due now, the earliest future time any other one is)."""
    due: list[UserView] = []
    wake: datetime | None = None
    for user in users:
        when = next_action_at(user, now)
        if when is None:
            continue
        if when <= now:
            due.append(user)
        elif wake is None or when < wake:
            wake = when
    return due, wake


# --- which step a started rotation is at ------------------------------------------------------------------


class Step(StrEnum):
    RETIRE = "retire"  # the old key is still live: rename it to its retired alias
    GENERATE = "generate"  # the live alias is free: register the pending key there
    SWAP = "swap"  # the pending key is live: make it the Secret's api-key
    ABANDON = "abandon"  # the alias holds a key that is neither (changed behind our back)


def pending_step(live_token: str | None, current_token: str, pending_token: str) -> Step:
    if live_token == pending_token:
        return Step.SWAP
    if live_token is None:
        return Step.GENERATE
    if live_token == current_token:
        return Step.RETIRE
    return Step.ABANDON


# --- Deployments that opt in to a rollout ----------------------------------------------------------------


def wants_rollout(annotations: Mapping[str, str], secret_name: str) -> bool:
    names = annotations.get(ANNOTATION_ROLLOUT, "")
    return secret_name in {n.strip() for n in names.split(",")}
