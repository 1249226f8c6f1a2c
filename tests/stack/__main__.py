"""`python -m tests.stack up|down|status`: the local stack behind `make stack-up` / `make stack-down`."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from tests.stack.common import (
    ENV_FILE,
    STACK_DIR,
    StackContext,
    StackError,
    kill_process,
    load_pids,
    pid_alive,
    read_env,
    say,
    write_env,
)

# Start order; each may read what the earlier ones put in ctx.env.
COMPONENTS = ["postgres", "sts", "bedrock", "litellm", "kube", "operator"]


def running() -> bool:
    entries = load_pids()
    return bool(entries) and all(pid_alive(int(e["pid"])) for e in entries) and ENV_FILE.exists()


def up(skip: set[str]) -> int:
    if running():
        say(f"already up; environment in {ENV_FILE}")
        return 0
    if load_pids():
        say("found a partly running stack; stopping it first")
        down()
    ctx = StackContext()
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for name in COMPONENTS:
        if name in skip:
            say(f"{name}: skipped")
            continue
        t0 = time.monotonic()
        say(f"{name}: starting")
        module = importlib.import_module(f"tests.stack.{name}")
        try:
            ctx.env.update(module.start(ctx))
        except StackError as error:
            say(f"{name}: FAILED: {error}")
            down()
            return 1
        write_env(ctx.env)
        say(f"{name}: ready in {time.monotonic() - t0:.1f}s")
    say(f"stack up in {time.monotonic() - started:.1f}s; run: source {ENV_FILE}")
    return 0


def down() -> int:
    entries = load_pids()
    if not entries:
        say("nothing running")
    for entry in reversed(entries):
        say(f"stopping {entry['name']} (pid {entry['pid']})")
        kill_process(str(entry["name"]), int(entry["pid"]))
    if (STACK_DIR / "pids.json").exists():
        (STACK_DIR / "pids.json").unlink()
    if ENV_FILE.exists():
        ENV_FILE.unlink()
    say("stack down")
    return 0


def status() -> int:
    entries = load_pids()
    for entry in entries:
        state = "running" if pid_alive(int(entry["pid"])) else "DEAD"
        print(f"{entry['name']:<16} pid {entry['pid']:<8} {state}")
    for key, value in read_env().items():
        shown = "***" if "KEY" in key or "PASSWORD" in key else value
        print(f"{key}={shown}")
    return 0 if running() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=COMPONENTS,
        help="do not start this component (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(set(args.skip))
    if args.command == "down":
        return down()
    return status()


if __name__ == "__main__":
    sys.exit(main())
