"""`gatewayctl health`: Kubernetes + CRDs, operator, LiteLLM liveness/readiness, database, Bedrock route.

Nothing here spends money: LiteLLM's /health would call every model, so the Bedrock route is checked
through /model/info (every model a tier grants is routed to a Bedrock deployment) instead."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import httpx
import typer

from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.errors import EXIT_OK, EXIT_PROBLEMS, CliError
from gateway_operator.cli.gateway import LiteLLM
from gateway_operator.cli.output import Column, Format, console, emit
from gateway_operator.models import TIER_PLURAL, USER_PLURAL

Status = Literal["OK", "WARN", "FAIL"]
# The labels the Helm chart puts on the operator Deployment.
OPERATOR_SELECTOR = "app.kubernetes.io/name=llm-gateway,app.kubernetes.io/component=operator"
RECONCILE_GRACE_SECONDS = 60


@dataclass
class Check:
    name: str
    status: Status
    detail: str


def _http_get(url: str) -> httpx.Response | str:
    try:
        return httpx.get(url, timeout=5.0)
    except httpx.HTTPError as error:
        return f"unreachable ({error.__class__.__name__})"


async def _kubernetes_checks(
    context: str | None, operator_url: str | None, selector: str
) -> tuple[list[Check], set[str]]:
    checks: list[Check] = []
    try:
        from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

        async with kube.connect(context) as k8s:
            missing = [p for p in (TIER_PLURAL, USER_PLURAL) if not await k8s.crd_installed(p)]
            if missing:
                checks.append(Check("kubernetes", "FAIL", f"{k8s.host}: CRDs missing: {', '.join(missing)}"))
                return checks, set()
            checks.append(Check("kubernetes", "OK", f"{k8s.host}: CRDs installed"))
            tiers = await k8s.list_tiers()
            users = await k8s.list_users(None)
            deployments = [] if operator_url else await k8s.list_deployments(selector)
    except CliError as error:
        checks.append(Check("kubernetes", "FAIL", error.line()))
        return checks, set()
    checks.append(_operator_check(operator_url, deployments, tiers + users))
    models = {m for t in tiers for m in (t.get("spec") or {}).get("models") or []}
    return checks, models


def _operator_check(url: str | None, deployments: list[Any], objects: list[dict[str, Any]]) -> Check:
    probe = ""
    if url:
        response = _http_get(url)
        if isinstance(response, str) or response.status_code != 200:
            code = response if isinstance(response, str) else f"HTTP {response.status_code}"
            return Check("operator", "FAIL", f"liveness {url}: {code}")
        probe = f"liveness {url} OK"
    elif deployments:
        ready = sum((d.status.ready_replicas or 0) for d in deployments)
        if ready == 0:
            names = ", ".join(f"{d.metadata.namespace}/{d.metadata.name}" for d in deployments)
            return Check("operator", "FAIL", f"deployment {names} has no ready replica")
        probe = f"{ready} ready replica(s)"
    lagging = _lagging(objects)
    if lagging:
        return Check("operator", "FAIL", f"{len(lagging)} object(s) not reconciled: {', '.join(lagging[:3])}")
    if not probe:
        if not objects:
            return Check("operator", "WARN", "not found (set OPERATOR_HEALTH_URL or --operator-url)")
        probe = "no probe"
    return Check("operator", "OK", f"{probe}; {len(objects)} object(s) reconciled")


def _lagging(objects: list[dict[str, Any]]) -> list[str]:
    """Objects the operator has not caught up with for a while: a spec change not observed, or a
    deletion still blocked by our finalizer, RECONCILE_GRACE_SECONDS after it happened."""
    from gateway_operator.cli.views import parse_time

    now = time.time()
    late = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        changes = [parse_time(meta.get("creationTimestamp"))]
        changes += [parse_time(entry.get("time")) for entry in meta.get("managedFields") or []]
        known = [moment.timestamp() for moment in changes if moment is not None]
        last_change = max(known) if known else 0.0
        deleting = parse_time(meta.get("deletionTimestamp"))
        if deleting is not None:
            stuck = now - deleting.timestamp() > RECONCILE_GRACE_SECONDS
        else:
            observed = (obj.get("status") or {}).get("observedGeneration")
            stuck = observed != meta.get("generation") and now - last_change > RECONCILE_GRACE_SECONDS
        if stuck:
            late.append(f"{obj.get('kind')}/{meta.get('name')}")
    return late


def _litellm_checks(litellm: LiteLLM | None, tier_models: set[str]) -> list[Check]:
    if litellm is None:
        return [Check("litellm", "FAIL", "LITELLM_ADMIN_URL not set; export it or pass --litellm-url")]
    checks: list[Check] = []
    live = _http_get(f"{litellm.url}/health/liveliness")
    if isinstance(live, str) or live.status_code != 200:
        detail = live if isinstance(live, str) else f"HTTP {live.status_code}"
        return [Check("litellm liveness", "FAIL", f"{litellm.url}: {detail}")]
    checks.append(Check("litellm liveness", "OK", litellm.url))
    ready = _http_get(f"{litellm.url}/health/readiness")
    body: dict[str, Any] = {}
    if not isinstance(ready, str):
        try:
            body = ready.json() if isinstance(ready.json(), dict) else {}
        except ValueError:
            body = {}
    if isinstance(ready, str) or ready.status_code != 200:
        detail = ready if isinstance(ready, str) else f"HTTP {ready.status_code} {body.get('status', '')}"
        checks.append(Check("litellm readiness", "FAIL", detail))
    else:
        version = body.get("litellm_version")
        checks.append(
            Check("litellm readiness", "OK", f"{body.get('status')}" + (f", v{version}" if version else ""))
        )
    db = str(body.get("db", "unknown"))
    checks.append(Check("database", "OK" if db == "connected" else "FAIL", f"readiness says db: {db}"))
    checks.append(_bedrock_check(litellm, tier_models))
    return checks


def _bedrock_check(litellm: LiteLLM, tier_models: set[str]) -> Check:
    if not litellm.master_key:
        return Check("bedrock route", "WARN", "skipped: LITELLM_MASTER_KEY not set")
    try:
        routes = litellm.model_routes()
    except CliError as error:
        return Check("bedrock route", "FAIL", error.line())
    if not routes:
        return Check("bedrock route", "FAIL", "LiteLLM serves no models")
    missing = sorted(tier_models - routes.keys())
    if missing:
        return Check(
            "bedrock route", "FAIL", f"tiers grant models LiteLLM does not serve: {', '.join(missing)}"
        )
    not_bedrock = sorted(name for name, model in routes.items() if not model.startswith("bedrock/"))
    if not_bedrock:
        return Check("bedrock route", "WARN", f"not routed to Bedrock: {', '.join(not_bedrock)}")
    return Check(
        "bedrock route", "OK", f"{len(routes)} models routed to Bedrock (checked without a model call)"
    )


@handle_errors
def health(
    ctx: typer.Context,
    litellm_url: Annotated[
        str | None, typer.Option("--litellm-url", help="LiteLLM base URL [default: $LITELLM_ADMIN_URL]")
    ] = None,
    operator_url: Annotated[
        str | None,
        typer.Option("--operator-url", help="Operator liveness URL [default: $OPERATOR_HEALTH_URL]"),
    ] = None,
    operator_selector: Annotated[
        str, typer.Option(help="Label selector of the operator Deployment")
    ] = OPERATOR_SELECTOR,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format")] = Format.table,
) -> None:
    """Check Kubernetes, the operator, LiteLLM, its database and the Bedrock route.

    Nothing is spent (no model call). Exit 0 when healthy, 1 when not."""
    url = operator_url or os.environ.get("OPERATOR_HEALTH_URL") or None
    checks, tier_models = run(_kubernetes_checks(options(ctx).context, url, operator_selector))
    checks += _litellm_checks(LiteLLM.from_env(litellm_url), tier_models)
    healthy = all(c.status != "FAIL" for c in checks)
    columns = [Column("name", "CHECK"), Column("status", "STATUS"), Column("detail", "DETAIL")]
    emit([asdict(c) for c in checks], columns, output)
    if output is Format.table:
        failed = [c.name for c in checks if c.status == "FAIL"]
        verdict = "healthy" if healthy else f"UNHEALTHY: {', '.join(failed)}"
        console().print(verdict, markup=False)
    raise typer.Exit(EXIT_OK if healthy else EXIT_PROBLEMS)
