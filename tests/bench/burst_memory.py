"""Where the operator's memory goes while a burst of GatewayUsers waits for LiteLLM's admin API.

Runs a fresh operator (``python -m gateway_operator``, the stack's settings) behind the counting admin proxy,
with the stack's own operator paused, applies ``--users`` GatewayUsers at once and reports, per run:
RSS idle, peak RSS (VmHWM) during the burst, RSS once all are Ready and again ``--settle`` seconds later,
and (peak - idle) / users. Then deletes the users (the operator's finalizers) and the tier, or with
``--fast-cleanup`` drops them without the operator (for repeated runs on a throwaway stack).

With ``--trace`` the operator runs with TRACEMALLOC_DUMP (gateway_operator/__main__.py): tracing (25 frames)
starts at idle with a first snapshot, and a second one is taken once ``--snapshot-calls`` admin calls were
made (the handlers run; most users still wait for their turn), compared and grouped by allocating line and
by owner (the innermost frame outside the standard library: kopf, ours, httpx/httpcore, pydantic, aiohttp).
RSS under tracing is not comparable with RSS without it: measure RSS in runs without --trace.

  python -m tests.bench.burst_memory --users 1000 --runs 2
  python -m tests.bench.burst_memory --users 1000 --trace
  python -m tests.bench.burst_memory --analyse idle.snap burst.snap --waiting 900   # existing dumps
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import sys
import sysconfig
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_operator.__main__ import TRACEMALLOC_DUMP
from tests.bench.common import cpu_seconds, load_average, say

STDLIB = sysconfig.get_paths()["stdlib"]
OWNERS = (
    ("/gateway_operator/", "ours"),
    ("/kopf/", "kopf"),
    ("/aiohttp/", "aiohttp (kopf's client)"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"),
    ("/pydantic", "pydantic"),
    ("/prometheus_client/", "prometheus_client"),
)


# --- analysis of tracemalloc snapshots --------------------------------------------------------------------


def owner_of(filename: str) -> str:
    for marker, name in OWNERS:
        if marker in filename:
            return name
    if filename.startswith(STDLIB) or filename.startswith("<"):
        return "stdlib"
    return "other"


def short(filename: str) -> str:
    for marker in ("site-packages/", "operator/", "lib/python3."):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail if marker != "lib/python3." else "stdlib/" + tail.split("/", 1)[-1]
    return filename


def owner_frame(traceback: tracemalloc.Traceback) -> tracemalloc.Frame:
    """The innermost frame outside the standard library: who asked for the memory (asyncio's Task, json's
    dicts and a coroutine's frame count for the library or module that made them)."""
    for frame in reversed(traceback):  # the most recent frame is last
        if owner_of(frame.filename) != "stdlib":
            return frame
    return traceback[-1]


@dataclass
class Grouped:
    by_owner: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_owner_line: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_line: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: int = 0


def group_growth(baseline: tracemalloc.Snapshot, burst: tracemalloc.Snapshot) -> Grouped:
    """Bytes alive in ``burst`` minus those alive in ``baseline``, per allocating traceback, then grouped."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]
    diffs = burst.filter_traces(ignore).compare_to(baseline.filter_traces(ignore), "traceback")
    grouped = Grouped()
    for diff in diffs:
        if not diff.size_diff or not len(diff.traceback):
            continue
        frame = owner_frame(diff.traceback)
        innermost = diff.traceback[-1]
        grouped.total += diff.size_diff
        grouped.by_owner[owner_of(frame.filename)] += diff.size_diff
        grouped.by_owner_line[f"{short(frame.filename)}:{frame.lineno}"] += diff.size_diff
        grouped.by_line[f"{short(innermost.filename)}:{innermost.lineno}"] += diff.size_diff
    return grouped


def print_growth(grouped: Grouped, waiting: int, top: int) -> None:
    per = max(waiting, 1)

    def table(title: str, rows: dict[str, int], limit: int) -> None:
        print(f"\n{title}")
        print(f"  {'KiB':>9} {'B/waiting user':>15}  where")
        for key, size in sorted(rows.items(), key=lambda item: -item[1])[:limit]:
            print(f"  {size / 1024:9.0f} {size / per:15.0f}  {key}")

    print(
        f"\ntracemalloc growth idle -> burst: {grouped.total / 1024 / 1024:.1f} MiB of live Python "
        f"allocations, {grouped.total / per / 1024:.1f} KiB per waiting user ({waiting} waiting)"
    )
    table("by owner (innermost frame outside the standard library)", grouped.by_owner, 20)
    table(f"top {top} owner lines", grouped.by_owner_line, top)
    table(f"top {top} allocating lines (innermost frame)", grouped.by_line, top)


def analyse(baseline_path: Path, burst_path: Path, waiting: int, top: int) -> None:
    baseline = tracemalloc.Snapshot.load(str(baseline_path))
    burst = tracemalloc.Snapshot.load(str(burst_path))
    print_growth(group_growth(baseline, burst), waiting, top)


# --- where the RSS is: glibc's heap vs pymalloc's arenas -----------------------------------------------


def memory_map(pid: int) -> str:
    """RSS by kind of mapping (/proc/<pid>/smaps): glibc's main heap (malloc'd objects over 512 bytes of the
    main thread), anonymous maps (pymalloc's 1 MiB arenas, which the kernel merges when adjacent, glibc's
    second arena, mmapped buffers), files."""
    kinds: dict[str, int] = defaultdict(int)
    kind = "files"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "glibc heap"
            elif not name:
                kind = "anonymous"
            else:
                kind = "files"
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    return ", ".join(
        f"{name} {kib / 1024:.0f} MiB" for name, kib in sorted(kinds.items(), key=lambda i: -i[1])
    )


def open_sockets(pid: int) -> int:
    """The process's open sockets (its connections: each TLS one holds a 256 KiB read buffer)."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


# --- one run ----------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    idle: float
    peak: float
    after: float
    settled: float
    users: int
    seconds: float
    load: str
    snapshots: tuple[Path, Path] | None = None
    waiting: int = 0
    maps: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    resume: str = ""
    sockets: int = 0

    @property
    def per_user_kib(self) -> float:
        return (self.peak - self.idle) * 1024 / self.users

    def text(self) -> str:
        return (
            f"idle {self.idle:.0f} MiB, peak {self.peak:.0f} MiB, after {self.after:.0f} MiB, "
            f"settled {self.settled:.0f} MiB; (peak - idle) / users = {self.per_user_kib:.1f} KiB; "
            f"all Ready in {self.seconds:.0f} s, operator CPU {self.cpu:.1f} s, "
            f"at most {self.sockets} sockets open (sampled); load {self.load}"
            + "".join(f"\n    {moment}: {text}" for moment, text in self.maps.items())
            + (f"\n    {self.resume}" if self.resume else "")
        )


async def wait_for_file(path: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no tracemalloc snapshot at {path} after {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return path


async def restart(operator: Any, args: argparse.Namespace) -> str:
    """Restart the operator with the users in place: kopf resumes every one of them at once."""
    from tests.bench.operator_bench import wait_quiet, wait_resumed

    proxy = operator.proxy
    proxy.reset()
    started = time.perf_counter()
    await asyncio.to_thread(operator.restart, **dict(item.split("=", 1) for item in args.env))
    await wait_resumed(proxy, args.users)
    seconds = time.perf_counter() - started
    await wait_quiet(proxy, quiet=3)
    after, peak = operator.rss()
    await asyncio.sleep(args.settle)
    settled, _ = operator.rss()
    return (
        f"restart with {args.users} users: resumed in {seconds:.0f} s, peak {peak:.0f} MiB, "
        f"after {after:.0f} MiB, settled {settled:.0f} MiB ({memory_map(operator.pid)})"
    )


async def one_run(env: dict[str, str], args: argparse.Namespace, index: int) -> RunResult:
    from tests.bench.kube import Kube, is_ready
    from tests.bench.operator_bench import BenchOperator, wait_quiet
    from tests.stack.common import STACK_DIR

    run = f"{secrets.token_hex(2)}{index}"
    namespace = tier = f"burst-{run}"
    dump = STACK_DIR / "logs" / f"burst-{run}.snap"
    settings = dict(item.split("=", 1) for item in args.env)
    if args.trace:
        settings[TRACEMALLOC_DUMP] = str(dump)
    kube = await Kube.connect(env["KUBECONFIG"])
    operator = BenchOperator(env, f"operator-burst-{run}", proxied=True)
    proxy = operator.proxy
    assert proxy is not None
    ready: set[str] = set()

    def on_user(kind: str, obj: dict[str, Any], now: float) -> None:
        if kind in ("ADDED", "MODIFIED") and is_ready(obj):
            ready.add(obj["metadata"]["name"])

    names = [f"u{i:05d}" for i in range(args.users)]
    snapshots: tuple[Path, Path] | None = None
    waiting = 0
    sockets = 0
    try:
        await asyncio.to_thread(operator.start, **settings)
        await kube.create_namespace(namespace)
        await kube.create_tier(tier, budget=1, rpm=10, models=["model-cheap"])
        await kube.wait_tier_ready(tier)
        await wait_quiet(proxy, quiet=2)
        await asyncio.sleep(3)
        idle, _ = operator.rss()
        maps = {"idle": memory_map(operator.pid)}
        cpu_idle = cpu_seconds(operator.pid)
        if args.trace:
            os.kill(operator.pid, signal.SIGUSR1)
            first = await wait_for_file(Path(f"{dump}.1"), 120)
        async with kube.watch("gatewayusers", namespace, on_user):
            started = time.perf_counter()
            creating = asyncio.create_task(kube.create_users(namespace, names, tier, run))
            while not creating.done():
                sockets = max(sockets, open_sockets(operator.pid))
                await asyncio.sleep(0.2)
            await creating
            if args.trace:
                # Once the admin calls flow (the handlers run), while most users still wait for theirs.
                deadline = time.monotonic() + 600
                while proxy.count("") < args.snapshot_calls and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                waiting = args.users - len(ready)
                say(f"snapshot: {waiting} of {args.users} users not Ready yet, {proxy.count('')} admin calls")
                os.kill(operator.pid, signal.SIGUSR1)
                snapshots = (first, await wait_for_file(Path(f"{dump}.2"), 600))
            deadline = time.monotonic() + max(300.0, args.users * (2.0 if args.trace else 0.5))
            while len(ready) < len(names):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(names) - len(ready)} users not Ready")
                await asyncio.sleep(0.5)
                sockets = max(sockets, open_sockets(operator.pid))
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(operator.pid) - cpu_idle
            await wait_quiet(proxy, quiet=3)
            after, peak = operator.rss()
            maps["after"] = memory_map(operator.pid)
            await asyncio.sleep(args.settle)
            settled, peak = operator.rss()
            maps["settled"] = memory_map(operator.pid)
        load = load_average()
        result = RunResult(
            idle, peak, after, settled, args.users, seconds, load, snapshots, waiting, maps, cpu
        )
        result.sockets = sockets
        say(f"run {run}: {result.text()}")
        if args.restart:
            result.resume = await restart(operator, args)
            say(f"run {run}: {result.resume}")
        return result
    finally:
        if args.fast_cleanup:
            operator.close()
            say(f"run {run}: dropping the objects without the operator (LiteLLM keeps their users and keys)")
            with contextlib.suppress(Exception):
                await drop_without_operator(kube, namespace, tier)
        else:
            say(f"run {run}: deleting the users (the operator's finalizers revoke their keys)")
            with contextlib.suppress(Exception):
                await kube.delete_all_users(namespace, timeout=max(300.0, args.users * 0.5))
                await kube.delete_tier(tier, wait=30)
                await kube.delete_namespace(namespace)
            operator.close()
        await kube.close()


async def drop_without_operator(kube: Any, namespace: str, tier: str) -> None:
    """Strip the finalizers and delete: seconds instead of minutes of finalizer work, for repeated runs on a
    throwaway stack (the LiteLLM users and keys stay; every run uses its own emails and aliases)."""
    from tests.bench.kube import GROUP, VERSION

    unblock = {"metadata": {"finalizers": None}}
    semaphore = asyncio.Semaphore(32)

    async def strip(name: str) -> None:
        async with semaphore:
            with contextlib.suppress(Exception):
                await kube.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "gatewayusers",
                    name,
                    unblock,
                    _content_type="application/merge-patch+json",
                )

    users = await kube.list_users(namespace)
    await asyncio.gather(*(strip(u["metadata"]["name"]) for u in users))
    await kube.delete_all_users(namespace, timeout=60)
    with contextlib.suppress(Exception):
        await kube.custom.patch_cluster_custom_object(
            GROUP, VERSION, "gatewaytiers", tier, unblock, _content_type="application/merge-patch+json"
        )
    await kube.delete_tier(tier, wait=30)
    await kube.delete_namespace(namespace)


async def main_async(args: argparse.Namespace) -> int:
    from tests.stack.common import read_env
    from tests.stack.operator import pause_stack_operator

    env = read_env()
    os.environ.update(env)
    results: list[RunResult] = []
    with pause_stack_operator():  # type: ignore[attr-defined]
        for index in range(args.runs):
            say(f"run {index + 1}/{args.runs}: {args.users} users at once; load {load_average()}")
            result = await one_run(env, args, index)
            results.append(result)
            if result.snapshots is not None:
                analyse(result.snapshots[0], result.snapshots[1], result.waiting, args.top)
    if len(results) > 1:

        def median(values: list[float]) -> float:
            return statistics.median(values)

        say(
            f"median of {len(results)}: idle {median([r.idle for r in results]):.0f} MiB, "
            f"peak {median([r.peak for r in results]):.0f} MiB, "
            f"after {median([r.after for r in results]):.0f} MiB, "
            f"settled {median([r.settled for r in results]):.0f} MiB, "
            f"{median([r.per_user_kib for r in results]):.1f} KiB per waiting user"
        )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.burst_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshots (25 frames)")
    parser.add_argument(
        "--snapshot-calls", type=int, default=100, help="with --trace: snapshot after this many admin calls"
    )
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle before the last RSS")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--restart", action="store_true", help="then restart the operator: resume pass")
    parser.add_argument(
        "--fast-cleanup",
        action="store_true",
        help="drop the objects without the operator (LiteLLM keeps their users and keys): for repeated runs",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra operator environment"
    )
    parser.add_argument("--waiting", type=int, default=1000, help="with --analyse: users waiting")
    parser.add_argument(
        "--analyse", nargs=2, metavar=("IDLE", "BURST"), help="compare two existing snapshots"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.analyse:
        analyse(Path(args.analyse[0]), Path(args.analyse[1]), args.waiting, args.top)
        return 0
    say("command: python -m tests.bench.burst_memory " + " ".join(sys.argv[1:]))
    # `kill` unwinds like Ctrl-C (which a shell's background job ignores): the bench operator stops and the
    # stack's own operator is resumed.
    signal.signal(signal.SIGTERM, _interrupt)
    return asyncio.run(main_async(args))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
