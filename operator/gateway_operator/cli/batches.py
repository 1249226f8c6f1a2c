"""Pure parts of `gatewayctl users import --apply --batch-size N`: splitting rows into batches, deciding
from a listed GatewayUser whether it is done for the generation just applied, and the progress text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from gateway_operator import conditions as cond
from gateway_operator.adoption import REASON_KEY_CONFLICT

T = TypeVar("T")

# Provisioned but not Ready by someone's decision (spec.suspended, the monthly budget): waiting cannot
# change it, and the key and Secret are in place, so the import is done with these users.
SETTLED_REASONS = frozenset({cond.SUSPENDED, cond.BUDGET_EXCEEDED})
# Needs a person (delete a Secret, fix a spec, free an email): the operator will not get past it alone.
# TierNotFound/TierNotReady are not here: right after `tiers apply` they clear by themselves.
BLOCKED_REASONS = frozenset(
    {cond.SECRET_CONFLICT, cond.EMAIL_CONFLICT, cond.INVALID_SPEC, REASON_KEY_CONFLICT}
)

State = Literal["ready", "settled", "waiting", "blocked"]
DONE_STATES: frozenset[State] = frozenset({"ready", "settled"})


def split(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in order, `size` at a time (the last batch may be shorter)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str  # the Ready reason, or a short word for "not there yet"
    detail: str  # one line for a person

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


def _ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == cond.READY:
            return condition
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def verdict(obj: dict[str, Any] | None, generation: int | None) -> Verdict:
    """Is this GatewayUser (as listed) done for `generation` (metadata.generation returned by the apply;
    None: whatever the listed object's generation is)? A status from an older generation never counts."""
    if obj is None:
        return Verdict("waiting", "Missing", "not in the cluster any more (deleted while waiting?)")
    wanted = generation if generation is not None else _int((obj.get("metadata") or {}).get("generation"))
    condition = _ready_condition(obj)
    if condition is None:
        return Verdict(
            "waiting", "NotReconciled", "no Ready condition yet (the operator has not reconciled it)"
        )
    observed = _int(condition.get("observedGeneration"))
    if observed is None:
        observed = _int((obj.get("status") or {}).get("observedGeneration"))
    status = str(condition.get("status", "Unknown"))
    reason = str(condition.get("reason") or "")
    message = str(condition.get("message") or "")
    if wanted is not None and (observed is None or observed < wanted):
        seen = f"generation {observed}" if observed is not None else "an unknown generation"
        return Verdict(
            "waiting",
            "NotReconciled",
            f"generation {wanted} not reconciled yet (Ready={status} {reason} is from {seen})",
        )
    detail = f"Ready={status} {reason}: {message}" if message else f"Ready={status} {reason}"
    if status == "True":
        return Verdict("ready", reason, detail)
    if reason in SETTLED_REASONS:
        return Verdict("settled", reason, detail)
    if reason in BLOCKED_REASONS:
        return Verdict("blocked", reason, detail)
    return Verdict("waiting", reason or status, detail)


def counts_text(counts: dict[str, int]) -> str:
    """'480 created, 20 unchanged' (zero counts left out; 'nothing' when all are zero)."""
    parts = [f"{count} {what}" for what, count in counts.items() if count]
    return ", ".join(parts) or "nothing"


def reasons_text(verdicts: Iterable[Verdict]) -> str:
    """'75 NotReconciled, 5 TierNotReady' (most frequent first)."""
    tally = Counter(v.reason for v in verdicts)
    return ", ".join(f"{count} {reason}" for reason, count in tally.most_common())


def batch_line(index: int, total: int, counts: dict[str, int], seconds: float, settled: int = 0) -> str:
    applied = sum(counts.values())
    line = f"batch {index}/{total}: {applied} applied ({counts_text(counts)}), Ready in {seconds:.0f} s"
    if settled:
        line += f" ({settled} provisioned but not Ready by decision: suspended or over budget)"
    return line


def waiting_line(index: int, total: int, done: int, size: int, seconds: float, pending: list[Verdict]) -> str:
    return (
        f"batch {index}/{total}: {done}/{size} Ready after {seconds:.0f} s; "
        f"waiting on {len(pending)} ({reasons_text(pending)})"
    )


def not_applied_text(applied: int, total: int) -> str:
    """'6 of 7 rows applied, 1 not applied'."""
    return f"{applied} of {total} rows applied, {total - applied} not applied"
