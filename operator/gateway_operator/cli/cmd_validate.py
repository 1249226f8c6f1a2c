"""`gatewayctl validate PATH...`: offline checks for CI and pre-commit."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from gateway_operator.cli import resources
from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.errors import EXIT_OK, EXIT_PROBLEMS, CliError
from gateway_operator.cli.output import console
from gateway_operator.cli.validate import Validator, iter_manifest_files, schemas_from_crds, validate_paths


class Style(enum.StrEnum):
    text = "text"
    github = "github"


@handle_errors
def validate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="YAML files or directories (searched for *.yaml, *.yml)")
    ],
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Also accept tiers that exist in the current cluster")
    ] = False,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated model names the gateway serves [default: its config]"),
    ] = None,
    litellm_config: Annotated[
        Path | None,
        typer.Option("--litellm-config", help="LiteLLM config whose model_list defines the models"),
    ] = None,
    crds: Annotated[
        Path | None,
        typer.Option("--crds", help="Directory with the CRDs [default: the ones gatewayctl ships]"),
    ] = None,
    fmt: Annotated[Style, typer.Option("--format", help="'github' adds workflow annotations")] = Style.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too")] = False,
) -> None:
    """Check GatewayTier/GatewayUser manifests offline, for CI and pre-commit.

    The CRD schema and its CEL rules, referenced tiers, unique emails, served models. One line a
    problem, FILE:DOC-INDEX: KIND/NAME: FIELD: REASON (doc index from 0, like yq's documentIndex).
    Exit 1 on any error."""
    files = list(iter_manifest_files(paths))
    if not files:
        raise CliError("no YAML files found", obj=" ".join(map(str, paths)), fix="pass files or directories")
    if models is not None:
        served: set[str] | None = {m.strip() for m in models.split(",") if m.strip()}
    else:
        served = resources.gateway_models(litellm_config)
    cluster_tiers = run(_cluster_tiers(options(ctx).context)) if cluster else None
    validator = Validator(schemas_from_crds(resources.load_crds(crds)), served, cluster_tiers)
    report = validate_paths(validator, paths)
    out = console()
    for finding in sorted(report.findings, key=lambda f: (f.source, -1 if f.doc is None else f.doc)):
        out.print(finding.github() if fmt is Style.github else finding.format(), markup=False, soft_wrap=True)
    failed = bool(report.errors) or (strict and bool(report.warnings))
    verdict = "FAILED" if failed else "OK"
    out.print(
        f"{verdict}: {report.files} file(s), {report.tiers} tier(s), {report.users} user(s); "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)",
        markup=False,
    )
    raise typer.Exit(EXIT_PROBLEMS if failed else EXIT_OK)


async def _cluster_tiers(context: str | None) -> set[str]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        return {t["metadata"]["name"] for t in await k8s.list_tiers()}
