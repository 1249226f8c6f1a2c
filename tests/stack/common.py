"""Shared plumbing for the local stack: state folders, free ports, processes tracked by PID.

Every component module (postgres, sts, bedrock, litellm, kube, operator) exposes
``start(ctx: StackContext) -> dict[str, str]``: it starts its processes with ``ctx.spawn``, waits
until they are ready, and returns the variables it adds to ``.stack/env``. Stopping is generic:
``stop_all`` kills every recorded PID (process group) in reverse start order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("LLMGW_STACK_DIR", REPO_ROOT / ".stack"))
CACHE_DIR = Path(os.environ.get("LLMGW_CACHE_DIR", REPO_ROOT / ".cache"))
ENV_FILE = STACK_DIR / "env"
PIDS_FILE = STACK_DIR / "pids.json"
LOG_DIR = STACK_DIR / "logs"
LITELLM_CONFIG = REPO_ROOT / "charts" / "llm-gateway" / "files" / "litellm-config.yaml"


class StackError(RuntimeError):
    """A component could not be started; the message says which and where its log is."""


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_pids() -> list[dict[str, object]]:
    if not PIDS_FILE.exists():
        return []
    return list(json.loads(PIDS_FILE.read_text()))


def _save_pids(entries: list[dict[str, object]]) -> None:
    PIDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    PIDS_FILE.write_text(json.dumps(entries, indent=2))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_process(name: str, pid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    say(f"{name} (pid {pid}) ignored SIGTERM; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def forget_pid(name: str) -> None:
    _save_pids([e for e in load_pids() if e["name"] != name])


@dataclass
class StackContext:
    """What a component needs to start: its state folder, the env so far, a way to spawn."""

    stack_dir: Path = STACK_DIR
    cache_dir: Path = CACHE_DIR
    env: dict[str, str] = field(default_factory=dict)

    def state_dir(self, component: str) -> Path:
        path = self.stack_dir / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_path(self, name: str) -> Path:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        return LOG_DIR / f"{name}.log"

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in its own process group, log to .stack/logs/<name>.log."""
        log = self.log_path(name).open("ab")
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        entries = [e for e in load_pids() if e["name"] != name]
        entries.append({"name": name, "pid": process.pid, "argv": list(argv)[:3]})
        _save_pids(entries)
        return process

    def wait_until(
        self,
        name: str,
        ready: Callable[[], bool],
        timeout: float,
        process: subprocess.Popen[bytes] | None = None,
        interval: float = 0.2,
    ) -> None:
        """Poll ``ready`` until it is true; fail fast if ``process`` exits, with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}; {self.log_tail(name)}")
            try:
                if ready():
                    return
            except Exception:  # readiness probes fail in many ways while a server starts
                pass
            time.sleep(interval)
        raise StackError(f"{name} was not ready after {timeout:.0f}s; {self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.exists():
            return f"no log at {path}"
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return f"last lines of {path}:\n" + "\n".join(tail)


def write_env(values: Mapping[str, str]) -> None:
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    lines = [f"export {key}={_shell_quote(value)}" for key, value in values.items()]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)


def read_env() -> dict[str, str]:
    """Parse .stack/env (written by write_env) without a shell."""
    import shlex

    values: dict[str, str] = {}
    if not ENV_FILE.exists():
        return values
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("export "):
            key, _, raw = line[len("export ") :].partition("=")
            parts = shlex.split(raw)
            values[key] = parts[0] if parts else ""
    return values


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def python_executable() -> str:
    return sys.executable
