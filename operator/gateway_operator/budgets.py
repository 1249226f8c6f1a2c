"""Budget alerts and the missed-reset watchdog: pure decisions, no I/O.

A budget period is identified by the key's ``budget_reset_at`` (when it ends). The alert level kept in
status is the highest threshold crossed within that period, so each threshold posts one Event per
period no matter how many resyncs see it, and a new period (a reset moved ``budget_reset_at``) starts
from zero again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway_operator import conditions as cond
from gateway_operator.models import BudgetAlert, Condition, ConditionStatus

THRESHOLDS: tuple[int, ...] = (80, 90, 100)
BUDGET_WARNING = "BudgetWarning"  # condition type
WITHIN_BUDGET = "WithinBudget"
BUDGET_RESET_MISSED = "BudgetResetMissed"  # Event reason
# A 1mo key reset by the watchdog first moves to this duration (also "1st of next month" in LiteLLM):
# /key/update keeps a due budget_reset_at when the SAME duration is re-sent, so only a change of
# duration makes LiteLLM recompute it; the second update returns to the desired duration.
RESET_NUDGE_DURATION = "30d"


def reason_for(level: int) -> str:
    return cond.BUDGET_EXCEEDED if level >= 100 else f"Budget{level}"


def budget_level(spend: float | None, max_budget: float | None) -> int:
    """The highest threshold (percent of the budget) that ``spend`` has reached; 0 below 80%."""
    if spend is None or max_budget is None:
        return 0
    if max_budget <= 0:
        return 100 if spend > 0 or max_budget == 0 else 0
    percent = spend / max_budget * 100
    return max((t for t in THRESHOLDS if percent >= t - 1e-9), default=0)


def decide_alert(previous: BudgetAlert | None, level: int, period: str | None) -> BudgetAlert | None:
    """status.budgetAlert after seeing ``level`` in the period ending at ``period``: the highest level
    of the period (a level below the one already recorded in the same period changes nothing)."""
    announced = previous.level if previous is not None and previous.period == period else 0
    if level > announced:
        return BudgetAlert(level=level, period=period)
    if previous is not None and previous.period != period:
        # A new period below 80%: start over (kept as level 0, since a merge patch cannot drop a field).
        return BudgetAlert(level=0, period=period)
    return previous


def newly_crossed(previous: BudgetAlert | None, current: BudgetAlert | None) -> int | None:
    """The threshold to announce with an Event when status goes from ``previous`` to ``current``."""
    if current is None or current.level == 0:
        return None
    if previous is not None and previous.period == current.period and previous.level >= current.level:
        return None
    return current.level


def warning_condition(
    level: int, spend: float | None, max_budget: float | None
) -> tuple[ConditionStatus, str, str]:
    """BudgetWarning reflects the current spend (it turns False again after a reset)."""
    if level == 0 or spend is None or max_budget is None:
        return "False", WITHIN_BUDGET, "spend is below 80% of the monthly budget"
    return (
        "True",
        reason_for(level),
        f"spend {spend:.4f} USD is {level}% or more of the monthly budget of {max_budget:g} USD",
    )


def apply_warning(
    conditions: tuple[Condition, ...],
    level: int,
    spend: float | None,
    max_budget: float | None,
    generation: int | None,
) -> tuple[Condition, ...]:
    status, reason, message = warning_condition(level, spend, max_budget)
    return cond.set_condition(conditions, BUDGET_WARNING, status, reason, message, generation)


def event_message(level: int, spend: float, max_budget: float | None, period: str | None) -> str:
    budget = f"{max_budget:g}" if max_budget is not None else "?"
    until = f"; the budget resets at {period}" if period else ""
    if level >= 100:
        return (
            f"spend {spend:.4f} USD reached the monthly budget of {budget} USD; requests are rejected{until}"
        )
    return f"spend {spend:.4f} USD crossed {level}% of the monthly budget of {budget} USD{until}"


def reset_missed(reset_at: datetime | None, now: datetime, margin_seconds: float) -> bool:
    """LiteLLM's reset job runs every ~10 minutes; a reset still due after ``margin_seconds`` was missed."""
    if reset_at is None:
        return False
    if reset_at.tzinfo is None:
        reset_at = reset_at.replace(tzinfo=UTC)
    return (now - reset_at).total_seconds() > margin_seconds
