"""`gatewayctl users add | import | list`."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway_operator import naming
from gateway_operator.cli import batches, resources
from gateway_operator.cli.common import handle_errors, options, run
from gateway_operator.cli.csvimport import CsvProblem, CsvResult, CsvUser, parse_users_csv
from gateway_operator.cli.emails import email_problem
from gateway_operator.cli.errors import CliError
from gateway_operator.cli.kubeconfig import context_namespace
from gateway_operator.cli.manifests import gateway_user, object_ref, to_yaml
from gateway_operator.cli.names import is_dns1123_subdomain, name_for_email, normalize_email
from gateway_operator.cli.output import Column, Format, console, emit, money
from gateway_operator.cli.validate import Document, Report, Validator, schemas_from_crds
from gateway_operator.cli.views import user_row
from gateway_operator.models import TIER_KIND, USER_KIND

if TYPE_CHECKING:
    from gateway_operator.cli.kube import Kube

app = typer.Typer(
    help="GatewayUsers: add one, import a CSV, list them with spend and budget.", no_args_is_help=True
)

NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace of the GatewayUsers [default: the context's]"),
]
APPLY_CONCURRENCY = 8
BATCH_TIMEOUT = 300.0  # seconds a batch may take to be Ready
POLL_SECONDS = 1.5  # between LISTs while a batch gets Ready
PROGRESS_EVERY = 15.0  # seconds between "still waiting" lines
BLOCKED_GRACE = 10.0  # a conflict can be the operator's index lagging a moment: look twice before giving up
NOT_READY_SHOWN = 50  # users named on failure; the rest are counted


def _offline_problems(objs: list[dict[str, Any]]) -> Report:
    """The CRD schema and CEL rules on objects we are about to write (same checks as `validate`)."""
    validator = Validator(schemas_from_crds(resources.load_crds()))
    docs = [Document("<generated>", index, obj) for index, obj in enumerate(objs)]
    for doc in docs:
        validator.check_document(doc)
    return validator.report


def _secret_hint(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    secret = naming.secret_name(meta["name"], obj["spec"].get("secretName"))
    return (
        f"the key arrives in Secret {meta['namespace']}/{secret}: "
        f"kubectl get secret {secret} -n {meta['namespace']}"
        " -o jsonpath='{.data.api-key}' | base64 -d"
    )


@app.command("add")
@handle_errors
def add(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="The person's email (also their LiteLLM user id)")],
    tier: Annotated[str, typer.Option("--tier", help="Name of an existing GatewayTier")],
    name: Annotated[
        str | None, typer.Option("--name", help="Object name [default: derived from the email]")
    ] = None,
    namespace: NamespaceOpt = None,
    display_name: Annotated[str | None, typer.Option("--display-name", help="Human-readable name")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="'yaml': print the manifest instead of applying it")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the operator reports Ready")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 60.0,
) -> None:
    """Create one GatewayUser, or print it with -o yaml for a GitOps repository."""
    if output not in (None, "yaml"):
        raise CliError(f"unsupported output {output!r}", fix="use -o yaml or leave it out to apply")
    problem = email_problem(email.strip())
    if problem:
        raise CliError(problem, obj="--email", fix="pass a valid address")
    object_name = name or name_for_email(email)
    if not is_dns1123_subdomain(object_name):
        raise CliError(
            f"invalid object name {object_name!r}", obj="--name", fix="use lowercase letters, digits, '-'"
        )
    tier = tier.strip().lower()
    opts = options(ctx)
    ns = namespace or context_namespace(opts.context)
    obj = gateway_user(name=object_name, namespace=ns, email=email, tier=tier, display_name=display_name)
    report = _offline_problems([obj])
    if report.errors:
        first = report.errors[0]
        raise CliError(first.reason, obj=f"{object_ref(obj)}: {first.field}")
    if output == "yaml":
        sys.stdout.write(to_yaml([obj]))
        return
    result, final = run(_add(opts.context, obj, namespace is None, wait, timeout))
    out = console()
    out.print(f"{object_ref(obj)} {result}")
    if final is not None:
        out.print(f"Ready; {_secret_hint(final)}", soft_wrap=True)
    else:
        out.print(_secret_hint(obj), soft_wrap=True)


async def _add(
    context: str | None, obj: dict[str, Any], default_ns: bool, wait: bool, timeout: float
) -> tuple[str, dict[str, Any] | None]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        if default_ns:
            obj["metadata"]["namespace"] = k8s.namespace
        tier = obj["spec"]["tier"]
        tiers = await k8s.list_tiers()
        if tier not in {t["metadata"]["name"] for t in tiers}:
            known = ", ".join(sorted(t["metadata"]["name"] for t in tiers)) or "none"
            raise CliError(
                f"tier {tier!r} does not exist in the cluster (known: {known})",
                obj=object_ref(obj),
                fix="run 'gatewayctl tiers apply' or pick a known tier",
            )
        await _check_email_free(k8s, obj)
        result, generation = await k8s.apply_generation(obj)
        if not wait:
            return result, None
        return result, await _wait_ready(k8s, obj, timeout, generation)


async def _check_email_free(k8s: Kube, obj: dict[str, Any]) -> None:
    email = normalize_email(obj["spec"]["email"])
    meta = obj["metadata"]
    for other in await k8s.list_users(None):
        other_meta = other.get("metadata") or {}
        same = other_meta.get("name") == meta["name"] and other_meta.get("namespace") == meta["namespace"]
        if not same and normalize_email(str((other.get("spec") or {}).get("email", ""))) == email:
            raise CliError(
                f"email {email} is already used by {object_ref(other)}",
                obj=object_ref(obj),
                fix="each person has exactly one GatewayUser; edit that one instead",
            )


async def _wait_ready(
    k8s: Kube, obj: dict[str, Any], timeout: float, generation: int | None = None
) -> dict[str, Any]:
    """The user once Ready for `generation` (the one just applied: a Ready from before does not count)."""
    meta = obj["metadata"]
    deadline = asyncio.get_running_loop().time() + timeout
    verdict = batches.verdict(None, generation)
    while asyncio.get_running_loop().time() < deadline:
        current = await k8s.get(USER_KIND, meta["name"], meta["namespace"])
        verdict = batches.verdict(current, generation)
        if verdict.state == "ready" and current is not None:
            return current
        await asyncio.sleep(0.5)
    raise CliError(
        f"not Ready after {timeout:.0f}s ({verdict.detail})",
        obj=object_ref(obj),
        fix="check 'gatewayctl health' and the operator's logs",
    )


# ---------------------------------------------------------------- import


def _print_problems(problems: list[CsvProblem], source: str) -> None:
    err = console(stderr=True)
    for problem in sorted(problems, key=lambda p: p.line):
        err.print(problem.format(source), markup=False, soft_wrap=True)


def _known_tiers_offline(tier_files: list[Path]) -> set[str]:
    if not tier_files:
        return {t["metadata"]["name"] for t in resources.standard_tiers()}
    names: set[str] = set()
    for path in tier_files:
        files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
        for file in files:
            for doc in resources.load_yaml_documents(file, f"tier file {file}"):
                if doc.get("kind") == TIER_KIND:
                    names.add(str((doc.get("metadata") or {}).get("name")))
    return names


def _schema_problems(result: CsvResult, objs: list[dict[str, Any]]) -> list[CsvProblem]:
    report = _offline_problems(objs)
    return [
        CsvProblem(result.users[finding.doc or 0].line, f"{finding.field}: {finding.reason}")
        for finding in report.errors
    ]


@app.command("import")
@handle_errors
def import_csv(
    ctx: typer.Context,
    csv_file: Annotated[
        Path, typer.Argument(help="CSV with the header email,tier,alias", metavar="USERS.CSV")
    ],
    namespace: NamespaceOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write one GatewayUser YAML a user into this directory")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Create/update the GatewayUsers in the cluster")
    ] = False,
    tiers: Annotated[
        list[Path] | None,
        typer.Option(
            "--tiers", help="GatewayTier manifests to check tiers against offline [default: standard]"
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="With --apply: apply N rows, wait until they are Ready, then the next N"
            " [default: all at once]",
            metavar="N",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help=f"With --batch-size: seconds each batch may take to be Ready [default: {BATCH_TIMEOUT:g}]",
            metavar="SECONDS",
        ),
    ] = None,
) -> None:
    """Onboard users from a CSV (email,tier,alias): validate, then write YAML or apply.

    Every row is checked first and every problem reported with its line number; nothing is written
    or applied unless all rows are valid. Without --out or --apply it only validates. Re-running is a
    no-op. With --batch-size N, rows are applied N at a time in CSV order, each batch waiting until its
    users are Ready; a batch that is not Ready in time stops the import before the next batch."""
    if out is not None and apply:
        raise CliError(
            "--out and --apply are exclusive", fix="write YAML for GitOps or apply directly, not both"
        )
    if batch_size is not None and not apply:
        raise CliError("--batch-size needs --apply", fix="add --apply, or leave --batch-size out")
    if batch_size is not None and batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, not {batch_size}", fix="pass --batch-size 100")
    if timeout is not None and batch_size is None:
        raise CliError(
            "--timeout limits the wait of each batch and needs --batch-size", fix="add --batch-size N"
        )
    if timeout is not None and not timeout > 0:
        raise CliError(f"--timeout must be more than 0 seconds, not {timeout:g}", fix="pass --timeout 300")
    try:
        data = csv_file.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {csv_file}: {error.strerror}", fix="check the path") from error
    source = str(csv_file)
    opts = options(ctx)
    if apply:
        batching = Batching(batch_size, BATCH_TIMEOUT if timeout is None else timeout) if batch_size else None
        run(_import_apply(opts.context, data, source, namespace, batching))
        return
    ns = namespace or context_namespace(opts.context)
    result, objs = _parse_and_build(data, source, ns, _known_tiers_offline(tiers or []))
    if out is None:
        _preview(result.users, ns)
        console().print(f"{len(objs)} rows valid; nothing written (pass --out DIR or --apply)")
        return
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for obj in objs:
        target = out / f"{obj['metadata']['name']}.yaml"
        text = to_yaml([obj])
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written += 1
    console().print(f"{len(objs)} GatewayUsers in {out} ({written} written, {len(objs) - written} unchanged)")


def _parse_and_build(
    data: bytes, source: str, namespace: str, known_tiers: set[str]
) -> tuple[CsvResult, list[dict[str, Any]]]:
    result = parse_users_csv(data, known_tiers)
    if result.ok:
        objs = [_user_obj(user, namespace) for user in result.users]
        result.problems.extend(_schema_problems(result, objs))
    if not result.ok:
        _print_problems(result.problems, source)
        raise CliError(
            f"{len(result.problems)} problem(s) in {source}; nothing was written or applied",
            fix="fix the lines above and run the command again",
        )
    if not result.users:
        raise CliError(
            f"{source} has no user rows", fix="add one line a user under the header email,tier,alias"
        )
    return result, objs


def _user_obj(user: CsvUser, namespace: str) -> dict[str, Any]:
    return gateway_user(
        name=user.name, namespace=namespace, email=user.email, tier=user.tier, display_name=user.alias
    )


def _preview(users: list[CsvUser], namespace: str) -> None:
    rows = [
        {
            "line": u.line,
            "namespace": namespace,
            "name": u.name,
            "email": normalize_email(u.email),
            "tier": u.tier,
            "alias": u.alias,
        }
        for u in users
    ]
    columns = [
        Column("line", "LINE", justify="right"),
        Column("namespace", "NAMESPACE"),
        Column("name", "NAME"),
        Column("email", "EMAIL"),
        Column("tier", "TIER"),
        Column("alias", "DISPLAY NAME"),
    ]
    emit(rows, columns, Format.table)


@dataclass(frozen=True)
class Batching:
    size: int
    timeout: float  # seconds each batch may take to be Ready, counted from its last apply


async def _import_apply(
    context: str | None, data: bytes, source: str, namespace: str | None, batching: Batching | None = None
) -> None:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        ns = namespace or k8s.namespace
        cluster_tiers = {t["metadata"]["name"] for t in await k8s.list_tiers()}
        result, objs = _parse_and_build(data, source, ns, cluster_tiers)
        everyone = await k8s.list_users(None)
        conflicts = _email_conflicts(result.users, objs, everyone)
        if conflicts:
            _print_problems(conflicts, source)
            raise CliError(
                f"{len(conflicts)} email(s) in {source} belong to other GatewayUsers; nothing was applied",
                fix="remove those rows or delete the other GatewayUsers",
            )
        existing = {(u["metadata"]["namespace"], u["metadata"]["name"]): u for u in everyone}
        rows = list(zip(result.users, objs, strict=True))
        if batching is not None:
            await _apply_in_batches(k8s, rows, existing, ns, source, batching)
            return
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        failures: list[CsvProblem] = []
        semaphore = asyncio.Semaphore(APPLY_CONCURRENCY)
        with Progress(
            TextColumn("applying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console(stderr=True),
            transient=False,
        ) as progress:
            task = progress.add_task("apply", total=len(objs))

            async def one(user: CsvUser, obj: dict[str, Any]) -> None:
                async with semaphore:
                    try:
                        outcome = await k8s.apply(obj, existing.get((ns, obj["metadata"]["name"])))
                        counts[outcome] += 1
                    except CliError as error:
                        failures.append(CsvProblem(user.line, error.line()))
                    progress.advance(task)

            await asyncio.gather(*(one(user, obj) for user, obj in rows))
        summary = ", ".join(f"{count} {what}" for what, count in counts.items())
        if failures:
            _print_problems(failures, source)
            raise CliError(f"{len(failures)} of {len(objs)} GatewayUsers failed to apply ({summary})")
        console().print(f"{len(objs)} GatewayUsers in namespace {ns}: {summary}")


@dataclass
class _Applied:
    user: CsvUser
    obj: dict[str, Any]
    outcome: str
    generation: int | None


async def _apply_batch(
    k8s: Kube,
    batch: list[tuple[CsvUser, dict[str, Any]]],
    existing: dict[tuple[str, str], dict[str, Any]],
    ns: str,
) -> tuple[list[_Applied], list[CsvProblem]]:
    """Apply one batch, APPLY_CONCURRENCY in flight; results in CSV order."""
    semaphore = asyncio.Semaphore(APPLY_CONCURRENCY)
    failures: list[CsvProblem] = []

    async def one(user: CsvUser, obj: dict[str, Any]) -> _Applied | None:
        async with semaphore:
            try:
                outcome, generation = await k8s.apply_generation(
                    obj, existing.get((ns, obj["metadata"]["name"]))
                )
            except CliError as error:
                failures.append(CsvProblem(user.line, error.line()))
                return None
        return _Applied(user, obj, outcome, generation)

    done = await asyncio.gather(*(one(user, obj) for user, obj in batch))
    return [a for a in done if a is not None], failures


async def _apply_in_batches(
    k8s: Kube,
    rows: list[tuple[CsvUser, dict[str, Any]]],
    existing: dict[tuple[str, str], dict[str, Any]],
    ns: str,
    source: str,
    batching: Batching,
) -> None:
    err = console(stderr=True)
    chunks = batches.split(rows, batching.size)
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    settled: list[tuple[_Applied, batches.Verdict]] = []
    started = time.monotonic()
    applied_rows = 0
    for index, chunk in enumerate(chunks, start=1):
        batch_started = time.monotonic()
        applied, failures = await _apply_batch(k8s, chunk, existing, ns)
        applied_rows += len(applied)
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for item in applied:
            counts[item.outcome] += 1
            totals[item.outcome] += 1
        if failures:
            _print_problems(failures, source)
            raise CliError(
                f"batch {index}/{len(chunks)}: {len(failures)} of {len(chunk)} GatewayUsers failed to apply "
                f"({batches.counts_text(counts)}); {batches.not_applied_text(applied_rows, len(rows))}",
                fix="fix the lines above and run the same command again (applied rows come back unchanged)",
            )
        outcome, verdicts = await _wait_batch(
            k8s, applied, existing, ns, (index, len(chunks)), batching.timeout
        )
        if outcome != "ready":
            _report_not_ready(applied, verdicts, source, ns)
            pending = [v for v in verdicts.values() if not v.done]
            blocked = outcome == "blocked"
            waited = "is blocked" if blocked else f"not Ready after {batching.timeout:g} s"
            raise CliError(
                f"batch {index}/{len(chunks)} {waited}: {len(pending)} of {len(chunk)} GatewayUsers "
                f"not Ready ({batches.reasons_text(pending)}); "
                f"{batches.not_applied_text(applied_rows, len(rows))}",
                fix="fix the cause shown above (see also 'gatewayctl health' and the operator's logs), then "
                "run the same command again: re-running is safe, applied rows come back unchanged"
                + ("; the operator re-checks a fixed user at its next resync" if blocked else "")
                + ("" if blocked else "; or raise --timeout"),
            )
        batch_settled = [(a, verdicts[_name(a)]) for a in applied if verdicts[_name(a)].state == "settled"]
        settled.extend(batch_settled)
        err.print(
            batches.batch_line(
                index, len(chunks), counts, time.monotonic() - batch_started, len(batch_settled)
            ),
            markup=False,
            soft_wrap=True,
        )
    summary = ", ".join(f"{count} {what}" for what, count in totals.items())
    console().print(
        f"{len(rows)} GatewayUsers in namespace {ns}: {summary}; Ready in {len(chunks)} batch(es) of "
        f"{batching.size} ({time.monotonic() - started:.0f} s)"
    )
    for item, verdict in settled:
        err.print(
            f"{source}:{item.user.line}: {object_ref(item.obj)} provisioned, not Ready: {verdict.detail}",
            markup=False,
            soft_wrap=True,
        )


def _name(item: _Applied) -> str:
    return str(item.obj["metadata"]["name"])


async def _wait_batch(
    k8s: Kube,
    applied: list[_Applied],
    existing: dict[tuple[str, str], dict[str, Any]],
    ns: str,
    position: tuple[int, int],
    timeout: float,
) -> tuple[Literal["ready", "blocked", "timeout"], dict[str, batches.Verdict]]:
    """Wait until every applied user is done for the generation applied: (how it ended, verdict by name).

    One LIST of the namespace a poll, never a GET a user: cheap for the API server at 10,000 users. Stops
    early ("blocked") when every user still pending was written by this run and needs a person (Secret
    or email conflict, invalid spec) for BLOCKED_GRACE seconds in a row. An unchanged user still in
    conflict from an earlier run is waited for: the admin may have fixed it, and the operator's resync
    will see that."""
    verdicts: dict[str, batches.Verdict] = {}
    pending: dict[str, _Applied] = {}
    for item in applied:
        if item.outcome == "unchanged":  # already done before this run: no need to look again
            before = batches.verdict(existing.get((ns, _name(item))), item.generation)
            if before.done:
                verdicts[_name(item)] = before
                continue
        pending[_name(item)] = item
    if not pending:
        return "ready", verdicts
    clock = asyncio.get_running_loop().time
    started = clock()
    deadline = started + timeout
    blocked_since: float | None = None
    last_note = started
    while True:
        list_started = clock()
        listed = {u["metadata"]["name"]: u for u in await k8s.list_users(ns)}
        list_seconds = clock() - list_started
        for name, item in list(pending.items()):
            verdicts[name] = batches.verdict(listed.get(name), item.generation)
            if verdicts[name].done:
                del pending[name]
        if not pending:
            return "ready", verdicts
        now = clock()
        still = [verdicts[name] for name in pending]
        if all(verdicts[n].state == "blocked" and item.outcome != "unchanged" for n, item in pending.items()):
            blocked_since = now if blocked_since is None else blocked_since
            if now - blocked_since >= BLOCKED_GRACE:
                return "blocked", verdicts
        else:
            blocked_since = None
        if now >= deadline:
            return "timeout", verdicts
        if now - last_note >= PROGRESS_EVERY:
            line = batches.waiting_line(
                *position, len(applied) - len(pending), len(applied), now - started, still
            )
            console(stderr=True).print(line, markup=False, soft_wrap=True)
            last_note = now
        # a LIST of thousands of users is not free: poll no more often than twice its duration
        await asyncio.sleep(min(max(POLL_SECONDS, 2 * list_seconds), deadline - now))


def _report_not_ready(
    applied: list[_Applied], verdicts: dict[str, batches.Verdict], source: str, ns: str
) -> None:
    err = console(stderr=True)
    stuck = [item for item in applied if not verdicts[_name(item)].done]
    for item in stuck[:NOT_READY_SHOWN]:
        err.print(
            f"{source}:{item.user.line}: {object_ref(item.obj)} not Ready: {verdicts[_name(item)].detail}",
            markup=False,
            soft_wrap=True,
        )
    if len(stuck) > NOT_READY_SHOWN:
        err.print(
            f"... and {len(stuck) - NOT_READY_SHOWN} more ('gatewayctl users list -n {ns}' shows them all)",
            markup=False,
            soft_wrap=True,
        )


def _email_conflicts(
    users: list[CsvUser], objs: list[dict[str, Any]], everyone: list[dict[str, Any]]
) -> list[CsvProblem]:
    owners = {normalize_email(str((u.get("spec") or {}).get("email", ""))): u for u in everyone}
    problems = []
    for user, obj in zip(users, objs, strict=True):
        owner = owners.get(normalize_email(user.email))
        if owner is None:
            continue
        same = (owner["metadata"].get("namespace"), owner["metadata"]["name"]) == (
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
        )
        if not same:
            problems.append(
                CsvProblem(user.line, f"email {user.email!r} already belongs to {object_ref(owner)}")
            )
    return problems


# ---------------------------------------------------------------- list

USER_COLUMNS = [
    Column("namespace", "NAMESPACE"),
    Column("name", "NAME"),
    Column("email", "EMAIL"),
    Column("tier", "TIER"),
    Column("spendUSD", "SPEND", money, "right"),
    Column("budgetUSD", "BUDGET", money, "right"),
    Column("remainingUSD", "REMAINING", money, "right"),
    Column("rpm", "RPM", str, "right"),
    Column("ready", "READY"),
    Column("keyAge", "KEY AGE", str, "right"),
]


@app.command("list")
@handle_errors
def list_users(
    ctx: typer.Context,
    namespace: NamespaceOpt = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Users of every namespace")
    ] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="Output format")] = Format.table,
) -> None:
    """List GatewayUsers: email, tier, spend, budget, remaining, RPM, ready, key age."""
    rows = run(_list_rows(options(ctx).context, namespace, all_namespaces))
    columns = USER_COLUMNS if all_namespaces or output is not Format.table else USER_COLUMNS[1:]
    if output is Format.table and not rows:
        console(stderr=True).print("no GatewayUsers found")
        return
    emit(rows, columns, output)


async def _list_rows(
    context: str | None, namespace: str | None, all_namespaces: bool
) -> list[dict[str, Any]]:
    from gateway_operator.cli import kube  # lazy: the client takes ~2 s to import

    async with kube.connect(context) as k8s:
        ns = None if all_namespaces else (namespace or k8s.namespace)
        users = await k8s.list_users(ns)
        tiers = {t["metadata"]["name"]: t for t in await k8s.list_tiers()}
        secrets = await k8s.secret_creation_times(ns)
    rows = []
    for user in sorted(users, key=lambda u: (u["metadata"].get("namespace", ""), u["metadata"]["name"])):
        row = user_row(user, tiers)
        if row["keyAge"] is None and row["secretName"]:
            from gateway_operator.cli.views import age

            row["keyAge"] = age(secrets.get((row["namespace"], row["secretName"])))
        rows.append(row)
    return rows
