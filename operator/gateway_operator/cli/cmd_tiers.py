"""`gatewayctl tiers list | apply` (apply = the old onboard_users.py --create-teams)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway_operator.cli import resources
from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.errors import CliError
from gateway_operator.cli.manifests import object_ref, to_yaml
from gateway_operator.cli.output import Column, Format, console, emit, money
from gateway_operator.cli.validate import Document, Validator, schemas_from_crds, validate_documents
from gateway_operator.cli.views import tier_row
from gateway_operator.models import TIER_KIND

app = typer.Typer(help="GatewayTiers: list them, apply the standard three.", no_args_is_help=True)

TIER_COLUMNS = [
    Column("name", "NAME"),
    Column("budgetUSD", "BUDGET", money, "right"),
    Column("rpm", "RPM", str, "right"),
    Column("tpm", "TPM", str, "right"),
    Column("models", "MODELS"),
    Column("users", "USERS", str, "right"),
    Column("ready", "READY"),
    Column("age", "AGE", str, "right"),
]


@app.command("list")
@handle_errors
def list_tiers(
    ctx: typer.Context,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format")] = Format.table,
) -> None:
    """Budget, RPM, models, user count and readiness of every GatewayTier."""
    rows = run(_tier_rows(options(ctx).context))
    if output is Format.table and not rows:
        console(stderr=True).print(
            "no GatewayTiers found; create the standard ones with: gatewayctl tiers apply"
        )
        return
    emit(rows, TIER_COLUMNS, output)


async def _tier_rows(context: str | None) -> list[dict[str, Any]]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        tiers = await k8s.list_tiers()
    return [tier_row(t) for t in sorted(tiers, key=lambda t: t["metadata"]["name"])]


def _load_tiers(files: list[Path]) -> list[Document]:
    docs: list[Document] = []
    if not files:
        for index, obj in enumerate(resources.standard_tiers()):
            docs.append(Document("standard tiers", index, obj))
        return docs
    for path in files:
        for index, obj in enumerate(resources.load_yaml_documents(path, f"tier file {path}")):
            if obj.get("kind") == TIER_KIND:
                docs.append(Document(str(path), index, obj))
    if not docs:
        raise CliError("no GatewayTier in the given files", fix="pass files with kind: GatewayTier")
    return docs


@app.command("apply")
@handle_errors
def apply_tiers(
    ctx: typer.Context,
    filename: Annotated[
        list[Path] | None,
        typer.Option("--filename", "-f", help="GatewayTier manifests [default: the standard three]"),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="'yaml': print the tiers instead of applying them")
    ] = None,
) -> None:
    """Create or update the standard tiers (drafting, coding, architect) or the given ones; idempotent."""
    if output not in (None, "yaml"):
        raise CliError(f"unsupported output {output!r}", fix="use -o yaml or leave it out to apply")
    docs = _load_tiers(filename or [])
    validator = Validator(schemas_from_crds(resources.load_crds()), gateway_models=resources.gateway_models())
    report = validate_documents(validator, docs)
    if report.errors:
        err = console(stderr=True)
        for finding in report.errors:
            err.print(finding.format(), markup=False, soft_wrap=True)
        raise CliError(f"{len(report.errors)} problem(s) in the tiers; nothing was applied")
    objs = [doc.obj for doc in docs]
    if output == "yaml":
        sys.stdout.write(to_yaml(objs))
        return
    results = run(_apply(options(ctx).context, objs))
    out = console()
    for obj, result in zip(objs, results, strict=True):
        out.print(f"{object_ref(obj)} {result}")


async def _apply(context: str | None, objs: list[dict[str, Any]]) -> list[str]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        return [await k8s.apply(obj) for obj in objs]
