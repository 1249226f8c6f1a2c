"""`gatewayctl keys gc`: revoke the LiteLLM keys of ours that no GatewayUser accounts for.

The same decision as the operator's per-tier resync (adoption.gc_candidate), over every key under our
alias prefix in LiteLLM, in any team, against the GatewayUsers of every namespace. Keys the operator
did not create (no managed-by marker in their metadata) are never touched; retired keys of a rotation
are kept until their llmgw_retire_after time (plus the grace)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from gateway_operator import adoption, naming
from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.errors import CliError, UnavailableError
from gateway_operator.cli.gateway import LiteLLM
from gateway_operator.cli.output import Column, Format, console, emit, money
from gateway_operator.models import KeyRecord

app = typer.Typer(help="LiteLLM keys of the gateway: garbage collection.", no_args_is_help=True)

DEFAULT_GRACE_SECONDS = 120.0  # the operator's ORPHAN_GRACE_SECONDS default
PAGE_SIZE = 100  # LiteLLM's maximum for /key/list

GC_COLUMNS = [
    Column("alias", "ALIAS"),
    Column("keyId", "KEY ID"),
    Column("team", "TEAM"),
    Column("spendUSD", "SPEND", money, "right"),
    Column("age", "AGE", str, "right"),
    Column("reason", "REASON"),
    Column("action", "ACTION"),
]


@dataclass
class GcResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    revoked: int = 0
    foreign: int = 0  # keys under our prefix the operator did not create: left alone
    live_users: int = 0


def _age(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(round(seconds) // size)}{unit}"
    return f"{round(seconds)}s"


def plan(
    keys: list[KeyRecord], live_aliases: frozenset[str], now: datetime, grace_seconds: float, dry_run: bool
) -> tuple[list[adoption.GcCandidate], GcResult]:
    """The candidates to revoke now, and the report rows (every candidate, due or kept, with its action)."""
    result = GcResult()
    due: list[adoption.GcCandidate] = []
    for key in keys:
        if not naming.is_managed_alias(key.key_alias):
            continue
        if not adoption.is_ours(key):
            result.foreign += 1
            continue
        found = adoption.gc_candidate(key, live_aliases, now, grace_seconds)
        if found is None:
            continue
        row = found.row()
        row["age"] = _age(found.age_seconds)
        if found.due:
            due.append(found)
            row["action"] = "would revoke" if dry_run else "revoked"
        elif found.keep_until is not None:
            row["action"] = f"kept until {row['keepUntil']}"
        else:
            row["action"] = "kept (younger than the grace)"
        result.rows.append(row)
    result.rows.sort(key=lambda r: (str(r["action"]), str(r["alias"])))
    return due, result


async def _our_keys(client: Any) -> list[KeyRecord]:
    keys: list[KeyRecord] = []
    page = 1
    while True:
        found = await client.key_list(
            key_alias=naming.KEY_ALIAS_PREFIX, substring=True, page=page, size=PAGE_SIZE
        )
        keys.extend(k for k in found.keys if naming.is_managed_alias(k.key_alias))
        if page >= found.total_pages or not found.keys:
            return keys
        page += 1


async def _live_aliases(context: str | None) -> frozenset[str]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        users = await k8s.list_users(None)
    aliases = set()
    for user in users:
        meta = user.get("metadata") or {}
        aliases.add(naming.key_alias(str(meta.get("namespace", "")), str(meta.get("name", ""))))
    return frozenset(aliases)


async def collect(
    context: str | None, litellm: LiteLLM, grace_seconds: float, dry_run: bool, force: bool
) -> GcResult:
    from pydantic import SecretStr

    from gateway_operator.clients.litellm import (
        BackendUnavailable,
        LiteLLMClient,
        LiteLLMError,
        Unauthorized,
    )

    live = await _live_aliases(context)  # first: no cluster, no deletion
    client = LiteLLMClient(litellm.url, SecretStr(litellm.master_key or ""), retries=1, backoff=0.5)
    try:
        keys = await _our_keys(client)
        due, result = plan(keys, live, datetime.now(UTC), grace_seconds, dry_run)
        result.live_users = len(live)
        if due and not live and not dry_run and not force:
            raise CliError(
                f"no GatewayUser exists in this cluster, so all {len(due)} key(s) of ours would be revoked "
                "(wrong kubeconfig context?); nothing was revoked",
                fix="check the context, run with --dry-run to see them, or pass --force",
            )
        if due and not dry_run:
            await client.key_delete(tokens=[c.token for c in due if c.token])
            result.revoked = len(due)
    except BackendUnavailable as error:
        raise UnavailableError(
            f"cannot reach LiteLLM at {litellm.url} ({error})",
            fix="check LITELLM_ADMIN_URL (kubectl port-forward svc/<release>-litellm 4000 in a cluster)",
        ) from error
    except Unauthorized as error:
        raise CliError(
            f"LiteLLM refused the master key ({error.status})", fix="check LITELLM_MASTER_KEY"
        ) from None
    except LiteLLMError as error:
        raise CliError(str(error)) from error
    finally:
        await client.aclose()
    return result


def _grace_default() -> float:
    try:
        return float(os.environ.get("ORPHAN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


@app.command("gc")
@handle_errors
def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be revoked; change nothing")
    ] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format")] = Format.table,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            min=0,
            help="Seconds a key of ours must exist before it counts as orphaned "
            "[default: $ORPHAN_GRACE_SECONDS or 120]",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Revoke even when the cluster has no GatewayUser at all")
    ] = False,
) -> None:
    """Find keys of ours whose GatewayUser no longer exists (in any namespace), and stale retired keys,
    and revoke them (unless --dry-run). Keys the operator did not create are never touched."""
    litellm = LiteLLM.from_env()
    if litellm is None or not litellm.master_key:
        raise CliError(
            "keys gc needs LiteLLM's admin API", fix="export LITELLM_ADMIN_URL and LITELLM_MASTER_KEY"
        )
    result = run(
        collect(
            options(ctx).context, litellm, grace if grace is not None else _grace_default(), dry_run, force
        )
    )
    if output is Format.table:
        err = console(stderr=True)
        if result.rows:
            emit(result.rows, GC_COLUMNS, output)
        due = sum(1 for r in result.rows if r["action"] in ("revoked", "would revoke"))
        verb = "would revoke" if dry_run else "revoked"
        summary = f"{verb} {due} key(s) of ours without a GatewayUser"
        if result.foreign:
            summary += (
                f"; {result.foreign} key(s) under {naming.KEY_ALIAS_PREFIX} not created by the operator "
                "left alone"
            )
        err.print(summary, markup=False, soft_wrap=True)
        return
    emit(result.rows, GC_COLUMNS, output)
