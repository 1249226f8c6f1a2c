"""`make bench` = `python -m tests.bench`: benchmarks of the operator and the gateway on the local stack.

Scripts that print numbers (median and spread, with the command, the machine and the date), not timed
tests. Uses the running stack (LLMGW_STACK_DIR, default .stack/) or starts one and stops it afterwards.

  latency   apply -> Secret for one GatewayUser at a time (p50/p99 over --samples)
  bulk      --users GatewayUsers at once -> all Ready; admin calls in flight; duplicate keys
  calls     admin calls per create, per no-op pass (restart) and per periodic resync (scaled to an hour)
  memory    operator RSS idle, at --users and at --big-users
  overhead  LiteLLM vs calling the Bedrock stub directly: one at a time, at --rps, max RPS, streaming TTFT

Examples:
  python -m tests.bench                                  # everything at modest sizes (200 users)
  python -m tests.bench --only overhead
  python -m tests.bench --users 1000 --big-users 10000 --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from tests.bench.common import Result, load_average, machine, print_table, say, write_markdown
from tests.bench.kube import Kube
from tests.bench.operator_bench import Options, bench_latency, bench_operator_scale
from tests.bench.overhead import OverheadOptions, bench_overhead

BENCHMARKS = ["latency", "bulk", "calls", "memory", "overhead"]
TITLES = {
    "latency": "1. apply -> Secret latency, one GatewayUser at a time",
    "bulk": "2. Many GatewayUsers applied at once",
    "calls": "3. LiteLLM admin calls per create, per no-op pass, per resync hour",
    "memory": "4. Operator memory (RSS)",
    "overhead": "5. Gateway overhead: LiteLLM vs the Bedrock stub directly",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run only these (repeatable or comma-separated): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--users", type=int, default=200, help="bulk size (default 200; the goals are stated for 1000)"
    )
    parser.add_argument(
        "--big-users", type=int, default=0, help="also measure memory at this many users (e.g. 10000; slow)"
    )
    parser.add_argument("--samples", type=int, default=50, help="latency samples (default 50)")
    parser.add_argument("--single-creates", type=int, default=10, help="creates counted one by one")
    parser.add_argument("--resync-seconds", type=int, default=20, help="resync interval while measuring it")
    parser.add_argument("--resync-cycles", type=int, default=3, help="resync passes to observe")
    parser.add_argument("--sequential", type=int, default=200, help="sequential gateway/direct calls each")
    parser.add_argument("--rps", type=float, default=50.0, help="open-loop rate (default 50)")
    parser.add_argument("--rps-seconds", type=float, default=20.0, help="open-loop duration")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="closed-loop duration per level")
    parser.add_argument(
        "--concurrency", default="8,32", help="closed-loop client counts for max RPS (default 8,32)"
    )
    parser.add_argument("--stream-samples", type=int, default=50, help="streams each way for TTFT")
    parser.add_argument("--markdown", action="store_true", help="write/update BENCHMARKS.md")
    parser.add_argument(
        "--cleanup",
        choices=["auto", "yes", "no"],
        default="auto",
        help="delete the bench objects afterwards (auto: unless this run started the stack itself)",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave a stack started here running")
    args = parser.parse_args(argv)
    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    args.selected = [name for name in BENCHMARKS if not only or name in only]
    return args


async def run(args: argparse.Namespace, env: dict[str, str], cleanup: bool, command: str) -> list[Result]:
    from tests.stack.operator import pause_stack_operator

    run_id = secrets.token_hex(3)
    results = {name: Result(name=name, title=TITLES[name], command=command) for name in args.selected}
    kube = await Kube.connect(env["KUBECONFIG"])
    opts = Options(
        users=args.users,
        big_users=args.big_users,
        samples=args.samples,
        single_creates=args.single_creates,
        resync_seconds=args.resync_seconds,
        resync_cycles=args.resync_cycles,
        cleanup=cleanup,
    )
    try:
        if "latency" in results:
            # The stack's own operator is paused: the bench operator has the cluster to itself.
            with pause_stack_operator():
                await timed(results["latency"], bench_latency(env, kube, run_id, opts, results["latency"]))
        scale = {name: results[name] for name in ("bulk", "calls", "memory") if name in results}
        if scale:
            first = next(iter(scale.values()))
            with pause_stack_operator():
                await timed(first, bench_operator_scale(env, kube, run_id, opts, scale))
            for result in scale.values():
                result.seconds, result.load_after = first.seconds, first.load_after
                result.started, result.load_before = first.started, first.load_before
                if result is not first:
                    result.notes += [n for n in first.notes if n.startswith("FAILED")]
        # Last: a saturated LiteLLM works through abandoned requests for a while afterwards.
        if "overhead" in results:
            overhead = OverheadOptions(
                sequential=args.sequential,
                rate=args.rps,
                rate_seconds=args.rps_seconds,
                max_seconds=args.max_seconds,
                concurrency=[int(c) for c in args.concurrency.split(",") if c.strip()],
                stream_samples=args.stream_samples,
                cleanup=cleanup,
            )
            with pause_stack_operator():
                await timed(
                    results["overhead"], bench_overhead(env, kube, run_id, overhead, results["overhead"])
                )
    finally:
        await kube.close()
    return [results[name] for name in args.selected]


async def timed(result: Result, work: Coroutine[Any, Any, None]) -> None:
    say(f"--- {result.title}")
    started = time.perf_counter()
    try:
        await work
    except Exception as error:  # reported in the table; the other benchmarks still run
        result.note(f"FAILED: {type(error).__name__}: {error}")
    finally:
        result.seconds = time.perf_counter() - started
        result.load_after = load_average()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.stack import __main__ as stack
    from tests.stack.common import STACK_DIR, read_env

    command = "python -m tests.bench" + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:]))
    info = machine()
    say(f"command: {command}")
    say(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, {info['os']}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}; load average {os.getloadavg()[0]:.2f}"
    )
    say(f"benchmarks: {', '.join(args.selected)}; stack folder {STACK_DIR}")
    started_here = False
    if not stack.running():
        say("no stack running: starting one")
        if stack.up(set()) != 0:
            say("the stack did not start; see the [stack] lines above")
            return 1
        started_here = True
    cleanup = {"yes": True, "no": False}.get(args.cleanup, not started_here)
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the finally blocks stop the bench's own operator process
    # (it is not in the stack's pids.json) and a stack started here.
    signal.signal(signal.SIGTERM, _interrupt)
    env = read_env()
    os.environ.update(env)  # boto3 (IRSA via moto STS) and kubeconfig, as the tests do
    try:
        results = asyncio.run(run(args, env, cleanup, command))
    finally:
        if started_here and not args.keep_stack:
            stack.down()
    for result in results:
        print_table(result)
    if args.markdown:
        write_markdown(results)
    failed = [r.name for r in results if any(n.startswith("FAILED") for n in r.notes)]
    missed = [f"{r.name}: {row.metric}" for r in results for row in r.rows if row.met is False]
    if missed:
        say("goals missed: " + "; ".join(missed))
    if failed:
        say(f"benchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
