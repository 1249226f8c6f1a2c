"""Stack component: the operator itself (`python -m gateway_operator`) against the stack's kube-apiserver
and LiteLLM. Waits for kopf's liveness endpoint and returns OPERATOR_HEALTH_URL.

Integration tests that need to kill, restart or instrument the operator pause this process
(SIGSTOP/SIGCONT, see tests/integration/operator_harness.py) and run their own operator meanwhile."""

from __future__ import annotations

import os
import random
import time
import urllib.request

from tests.stack.common import REPO_ROOT, StackContext, StackError, free_port

NAME = "operator"


def operator_env(ctx_env: dict[str, str], health_port: int, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LITELLM_", "KUBE"))}
    env.update(
        {
            "KUBECONFIG": ctx_env["KUBECONFIG"],
            "LITELLM_ADMIN_URL": ctx_env["LITELLM_ADMIN_URL"],
            "LITELLM_MASTER_KEY": ctx_env["LITELLM_MASTER_KEY"],
            "GATEWAY_PUBLIC_URL": ctx_env.get("LLM_GATEWAY_URL", ctx_env["LITELLM_ADMIN_URL"] + "/v1"),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(health_port),
            "RESYNC_INTERVAL_SECONDS": "60",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class AdminProxy:
    """A counting, fault-injecting HTTP proxy in front of the REAL LiteLLM admin API, for tests.

    Counts every request by "METHOD /path" and the peak of concurrent requests (what the operator
    really had in flight), and can: answer 503 / refuse connections (``down``), or hold requests to a
    path before or after forwarding them (``hold``) so a test can kill the operator at that moment.
    Runs an aiohttp server on its own event loop in a background thread."""

    def __init__(self, upstream: str):
        import threading

        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.down = False
        self.flaky = 0.0  # probability of an injected 5xx (half before forwarding, half after)
        self.trace: list[tuple[float, str, str]] | None = None  # (monotonic time, method, path?query)
        self._holds: dict[str, tuple[str, threading.Event, threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: object = None
        self._started = threading.Event()
        self._dropped: set[str] = set()

    # --- control (called from the test thread) ---------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.calls = {}
            self.max_in_flight = self.in_flight

    def writes(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.calls.items() if not k.startswith("GET ")}

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(v for k, v in self.calls.items() if k.startswith(prefix))

    def hold(self, path: str, when: str = "before") -> tuple[object, object]:
        """Block the next requests to ``path`` ("before" forwarding or "after" LiteLLM answered).
        Returns (reached, release) threading.Events."""
        import threading

        reached, release = threading.Event(), threading.Event()
        with self._lock:
            self._holds[path] = (when, reached, release)
        return reached, release

    def unhold(self, path: str, drop: bool = False) -> None:
        """Release held requests; ``drop`` discards those held before forwarding (never sent)."""
        with self._lock:
            entry = self._holds.pop(path, None)
            if drop:
                self._dropped.add(path)
            else:
                self._dropped.discard(path)
        if entry:
            entry[2].set()

    # --- server ---------------------------------------------------------------------------------------

    def start(self) -> AdminProxy:
        import threading

        self._thread = threading.Thread(target=self._run, name="admin-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise StackError("admin proxy did not start")
        return self

    def stop(self) -> None:
        import asyncio

        loop = self._loop
        for path in list(self._holds):
            self.unhold(path)
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        from aiohttp import ClientSession, ClientTimeout, web

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def wait_event(event: object) -> None:
            import threading

            assert isinstance(event, threading.Event)
            while not event.wait(0.01):
                await asyncio.sleep(0.02)

        async def handle(request: web.Request) -> web.StreamResponse:
            key = f"{request.method} {request.path}"
            filters = sorted(k for k in request.query if k in ("key_alias", "team_id", "user_id", "key"))
            if filters:
                key += "?" + ",".join(filters)
            with self._lock:
                self.calls[key] = self.calls.get(key, 0) + 1
                if self.trace is not None:
                    self.trace.append((time.monotonic(), request.method, request.path_qs))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                hold = self._holds.get(request.path)
            try:
                if self.down:
                    return web.json_response(
                        {"error": {"message": "injected outage", "code": "503"}}, status=503
                    )
                if hold and hold[0] == "before":
                    hold[1].set()
                    await wait_event(hold[2])
                    if request.path in self._dropped:
                        # The caller died while we held its request: it never reached LiteLLM.
                        return web.json_response({"error": {"message": "dropped", "code": "503"}}, status=503)
                roll = random.random()
                if roll < self.flaky / 2:
                    return web.json_response(
                        {"error": {"message": "injected 500", "code": "500"}}, status=500
                    )
                body = await request.read()
                headers = {
                    k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")
                }
                async with session.request(
                    request.method, self.upstream + request.path_qs, data=body, headers=headers
                ) as upstream:
                    payload = await upstream.read()
                    status = upstream.status
                    content_type = upstream.headers.get("content-type", "application/json")
                if self.flaky / 2 <= roll < self.flaky:
                    # LiteLLM did the work but the answer is lost: the nastiest case for idempotence.
                    return web.json_response(
                        {"error": {"message": "injected 502", "code": "502"}}, status=502
                    )
                if hold and hold[0] == "after":
                    hold[1].set()
                    await wait_event(hold[2])
                return web.Response(body=payload, status=status, headers={"content-type": content_type})
            finally:
                with self._lock:
                    self.in_flight -= 1

        async def main() -> None:
            nonlocal session
            session = ClientSession(timeout=ClientTimeout(total=60))
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runner_ref.append(runner)
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._started.set()

        async def shutdown() -> None:
            assert isinstance(session, ClientSession)
            await session.close()
            await runner_ref[0].cleanup()

        session: object = None
        runner_ref: list[web.AppRunner] = []
        loop.run_until_complete(main())
        loop.run_forever()
        loop.run_until_complete(shutdown())
        loop.close()


class OperatorProcess:
    """An operator process a test controls (start / SIGKILL / stop), logging to .stack/logs/<name>.log."""

    def __init__(self, name: str, env: dict[str, str]):
        from tests.stack.common import LOG_DIR

        self.name = name
        self.port = free_port()
        self.env = {**env, "HEALTH_PORT": str(self.port), "HEALTH_HOST": "127.0.0.1"}
        self.health_url = f"http://127.0.0.1:{self.port}/healthz"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.process: object = None

    def start(self, timeout: float = 60) -> OperatorProcess:
        import subprocess
        import time

        python = REPO_ROOT / ".venv" / "bin" / "python"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(python), "-m", "gateway_operator"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert isinstance(self.process, subprocess.Popen)
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited: {self.log_tail()}")
            if healthy(self.health_url):
                return self
            time.sleep(0.2)
        raise StackError(f"{self.name} not healthy after {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-flight, exactly like an OOM-kill or a node loss."""
        import signal
        import subprocess

        if isinstance(self.process, subprocess.Popen) and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        import signal
        import subprocess

        if isinstance(self.process, subprocess.Popen) and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def pause_stack_operator() -> object:
    """Context manager: SIGSTOP the stack's own operator (if running) so a test operator has the
    cluster to itself; SIGCONT on exit. Both run the same code, so the paused one resumes cleanly."""
    import contextlib
    import signal

    from tests.stack.common import load_pids, pid_alive

    @contextlib.contextmanager
    def paused() -> object:
        pids = [
            int(str(e["pid"])) for e in load_pids() if e["name"] == NAME and pid_alive(int(str(e["pid"])))
        ]
        for pid in pids:
            os.killpg(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)

    return paused()


def start(ctx: StackContext) -> dict[str, str]:
    for required in ("KUBECONFIG", "LITELLM_ADMIN_URL", "LITELLM_MASTER_KEY"):
        if required not in ctx.env:
            raise StackError(f"operator needs {required} from an earlier component")
    port = free_port()
    python = REPO_ROOT / ".venv" / "bin" / "python"
    process = ctx.spawn(
        NAME,
        [str(python if python.exists() else "python3"), "-m", "gateway_operator"],
        env=operator_env(ctx.env, port),
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}/healthz"
    ctx.wait_until(NAME, lambda: healthy(url), timeout=60, process=process)
    return {"OPERATOR_HEALTH_URL": url, "OPERATOR_PID_NAME": NAME}
