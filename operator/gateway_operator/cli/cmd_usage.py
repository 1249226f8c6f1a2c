"""`gatewayctl usage`: spend by tier and by user for a month.

Two sources: LiteLLM's daily spend records (/user/daily/activity; any month, survives budget resets; used
when LITELLM_ADMIN_URL and LITELLM_MASTER_KEY are set) or the GatewayUsers' status (the current budget
period only, which is the current calendar month since budgets reset on the 1st, UTC)."""

from __future__ import annotations

import calendar
import json
import re
import sys
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer

from gateway_operator import naming
from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.errors import CliError
from gateway_operator.cli.gateway import LiteLLM
from gateway_operator.cli.output import Column, Format, console, emit, money
from gateway_operator.cli.views import user_row

MONTH_RE = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")

TIER_COLUMNS = [
    Column("tier", "TIER"),
    Column("users", "USERS", str, "right"),
    Column("spendUSD", "SPEND", money, "right"),
    Column("budgetUSD", "BUDGET", money, "right"),
    Column("share", "SHARE", lambda v: f"{float(v):.1f}%", "right"),
]
USER_COLUMNS = [
    Column("namespace", "NAMESPACE"),
    Column("name", "NAME"),
    Column("email", "EMAIL"),
    Column("tier", "TIER"),
    Column("spendUSD", "SPEND", money, "right"),
    Column("budgetUSD", "BUDGET", money, "right"),
    Column("requests", "REQUESTS", str, "right"),
]
CSV_COLUMNS = [
    Column("scope", "scope"),
    Column("tier", "tier"),
    Column("namespace", "namespace"),
    Column("name", "name"),
    Column("email", "email"),
    Column("spendUSD", "spendUSD"),
    Column("budgetUSD", "budgetUSD"),
    Column("requests", "requests"),
    Column("users", "users"),
]


def month_range(month: str, today: date) -> tuple[date, date]:
    match = MONTH_RE.fullmatch(month)
    if not match:
        raise CliError(f"invalid month {month!r}", obj="--month", fix="use YYYY-MM, e.g. 2026-11")
    year, number = int(match.group(1)), int(match.group(2))
    first = date(year, number, 1)
    if first > today:
        raise CliError(f"{month} is in the future", obj="--month", fix="pick this month or an earlier one")
    last = date(year, number, calendar.monthrange(year, number)[1])
    return first, min(last, today)


def spend_from_daily(days: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """user id (email) -> {spendUSD, requests, team} summed over LiteLLM's daily records."""
    users: dict[str, dict[str, Any]] = defaultdict(lambda: {"spendUSD": 0.0, "requests": 0, "team": None})
    for day in days:
        breakdown = day.get("breakdown") or {}
        keys = breakdown.get("api_keys") or {}
        if keys:
            for entry in keys.values():
                meta = entry.get("metadata") or {}
                user = str(meta.get("user_id") or "(no user)")
                _add(users[user], entry.get("metrics") or {})
                users[user]["team"] = users[user]["team"] or meta.get("team_id")
        else:
            for user, entry in (breakdown.get("entities") or {}).items():
                _add(users[str(user)], entry.get("metrics") or {})
    return dict(users)


def _add(total: dict[str, Any], metrics: dict[str, Any]) -> None:
    total["spendUSD"] += float(metrics.get("spend") or 0.0)
    total["requests"] += int(metrics.get("api_requests") or 0)


def build_report(
    users: list[dict[str, Any]],
    tiers: dict[str, dict[str, Any]],
    litellm_spend: dict[str, dict[str, Any]] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tier rows, user rows). Without LiteLLM data the spend comes from each user's status."""
    user_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for obj in users:
        row = user_row(obj, tiers)
        email = naming.user_id(str(row["email"] or ""))
        seen.add(email)
        spend = row["spendUSD"]
        requests = None
        if litellm_spend is not None:
            found = litellm_spend.get(email) or {}
            spend, requests = found.get("spendUSD", 0.0), found.get("requests", 0)
        user_rows.append(
            {
                "scope": "user",
                "namespace": row["namespace"],
                "name": row["name"],
                "email": row["email"],
                "tier": row["tier"],
                "spendUSD": round(float(spend or 0.0), 6),
                "budgetUSD": row["budgetUSD"],
                "requests": requests,
            }
        )
    for email, found in (litellm_spend or {}).items():
        if email not in seen:  # spend of users deleted since, or keys we do not manage
            team = found.get("team")
            tier = naming.tier_from_team_id(team) if isinstance(team, str) else None
            user_rows.append(
                {
                    "scope": "user",
                    "namespace": None,
                    "name": None,
                    "email": email,
                    "tier": tier or "(none)",
                    "spendUSD": round(found["spendUSD"], 6),
                    "budgetUSD": None,
                    "requests": found["requests"],
                }
            )
    user_rows.sort(key=lambda r: (-r["spendUSD"], str(r["email"])))
    total = sum(r["spendUSD"] for r in user_rows)
    by_tier: dict[str, dict[str, Any]] = {}
    for row in user_rows:
        tier = str(row["tier"])
        entry = by_tier.setdefault(
            tier, {"scope": "tier", "tier": tier, "users": 0, "spendUSD": 0.0, "budgetUSD": 0.0}
        )
        entry["users"] += 1
        entry["spendUSD"] = round(entry["spendUSD"] + row["spendUSD"], 6)
        entry["budgetUSD"] += row["budgetUSD"] or 0.0
    tier_rows = sorted(by_tier.values(), key=lambda r: (-r["spendUSD"], r["tier"]))
    for entry in tier_rows:
        entry["share"] = round(100.0 * entry["spendUSD"] / total, 1) if total else 0.0
    return tier_rows, user_rows


@handle_errors
def usage(
    ctx: typer.Context,
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM [default: this month, UTC]")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only users of this namespace [default: all]")
    ] = None,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format")] = Format.table,
) -> None:
    """Spend by tier and by user for a month.

    From LiteLLM's spend records when LITELLM_ADMIN_URL and LITELLM_MASTER_KEY are set (any month),
    else from the GatewayUsers' status (current month only)."""
    today = datetime.now(UTC).date()
    chosen = month or today.strftime("%Y-%m")
    first, last = month_range(chosen, today)
    litellm = LiteLLM.from_env()
    if litellm is not None and not litellm.master_key:
        litellm = None
    if litellm is None and chosen != today.strftime("%Y-%m"):
        raise CliError(
            f"spend for {chosen} needs LiteLLM's records (status only holds the current month)",
            fix="export LITELLM_ADMIN_URL and LITELLM_MASTER_KEY",
        )
    users, tiers = run(_cluster(options(ctx).context, namespace))
    daily = None
    if litellm is not None:
        daily = spend_from_daily(list(litellm.daily_user_spend(first.isoformat(), last.isoformat())))
        if namespace is not None:
            emails = {naming.user_id(str((u.get("spec") or {}).get("email", ""))) for u in users}
            daily = {email: found for email, found in daily.items() if email in emails}
    tier_rows, user_rows = build_report(users, tiers, daily)
    source = "litellm" if daily is not None else "status"
    total = round(sum(r["spendUSD"] for r in user_rows), 6)
    if output is Format.json:
        body = {"month": chosen, "source": source, "totalUSD": total, "tiers": tier_rows, "users": user_rows}
        sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    elif output is Format.csv:
        emit(tier_rows + user_rows, CSV_COLUMNS, Format.csv)
    else:
        out = console()
        out.print(f"Spend {chosen} (from {source}): {money(total)}", markup=False)
        emit(tier_rows, TIER_COLUMNS, Format.table, title="by tier")
        emit(user_rows, USER_COLUMNS, Format.table, title="by user")


async def _cluster(
    context: str | None, namespace: str | None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        users = await k8s.list_users(namespace)
        tiers = {t["metadata"]["name"]: t for t in await k8s.list_tiers()}
    return users, tiers
