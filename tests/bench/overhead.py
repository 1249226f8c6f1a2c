"""Benchmark 5: what the gateway adds. The same Converse call to the Bedrock stub, made directly (SigV4
signed with the stack's IRSA credentials, signed before the clock starts: the floor, as in
tests/stack/bedrock_stub/latency.py) and through LiteLLM's OpenAI-compatible endpoint with a user key the
operator delivered (so LiteLLM's key auth, budget and RPM checks and spend tracking are all in the path).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import boto3  # type: ignore[import-untyped]
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from yarl import URL

from tests.bench.common import Result, Spread, say
from tests.bench.kube import Kube
from tests.bench.operator_bench import BenchOperator
from tests.bench.procs import CpuMeter, describe
from tests.stack.bedrock import StubAdmin
from tests.stack.bedrock_stub import latency

LOGICAL_MODEL = "model-cheap"  # -> bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0 == latency.MODEL
PROMPT = latency.MESSAGES[0]["content"][0]["text"]
MAX_TOKENS = 50


@dataclass
class OverheadOptions:
    sequential: int = 200
    rate: float = 50.0
    rate_seconds: float = 20.0
    max_seconds: float = 10.0
    concurrency: list[int] = field(default_factory=lambda: [8, 32])
    stream_samples: int = 50
    stream_delay_ms: float = 20.0
    cleanup: bool = True


# --- direct calls: signed requests ------------------------------------------------------------------------


class Signer:
    def __init__(self, url: str) -> None:
        session = boto3.Session()
        self.credentials = session.get_credentials().get_frozen_credentials()
        self.region = session.region_name or "us-east-1"
        self.url = url.rstrip("/")

    def request(self, operation: str = "converse") -> tuple[str, bytes, dict[str, str]]:
        path = f"/model/{quote(latency.MODEL, safe='')}/{operation}"
        body = json.dumps(
            {"messages": latency.MESSAGES, "inferenceConfig": {"maxTokens": MAX_TOKENS}}
        ).encode()
        request = AWSRequest(
            method="POST", url=f"{self.url}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(self.credentials, "bedrock", self.region).add_auth(request)
        return path, body, dict(request.headers.items())


def gateway_body(stream: bool = False) -> dict[str, Any]:
    return {
        "model": LOGICAL_MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }


def gateway_sequential(base: str, key: str, n: int) -> list[float]:
    """N sequential chat completions on one keep-alive connection (after 10 warm-up calls), seconds each."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    body = json.dumps(gateway_body()).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    samples = []
    for i in range(n + 10):
        started = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            # Not the body: LiteLLM's auth errors quote part of the key.
            raise RuntimeError(f"gateway answered HTTP {response.status}")
        if i >= 10:
            samples.append(elapsed)
    connection.close()
    return samples


# --- load generators -------------------------------------------------------------------------------------

Send = Callable[[aiohttp.ClientSession], Awaitable[None]]


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    late_ms: list[float] = field(default_factory=list)
    shed: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def error_text(self) -> str:
        text = ", ".join(f"{k} x{v}" for k, v in self.errors.items()) or "none"
        return text + (f"; {self.shed} not sent (too many unanswered)" if self.shed else "")


async def _timed(send: Send, session: aiohttp.ClientSession, load: Load) -> None:
    started = time.perf_counter()
    try:
        await send(session)
    except Exception as error:  # counted and reported, the load goes on
        load.errors[type(error).__name__ + (f" {error}"[:60] if str(error) else "")] += 1
        return
    load.latencies_ms.append((time.perf_counter() - started) * 1000)


async def open_loop(send: Send, rate: float, seconds: float, max_outstanding: int) -> Load:
    """Requests started on a fixed schedule (``rate`` per second), whatever the answers do; except that
    a request due while ``max_outstanding`` are unanswered is not sent (counted in ``shed``): a server
    that cannot keep up would otherwise pile up a backlog that outlives the benchmark."""
    load = Load()
    total = int(rate * seconds)
    outstanding = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal outstanding
        outstanding += 1
        try:
            await _timed(send, session, load)
        finally:
            outstanding -= 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        for _ in range(10):
            await send(session)
        tasks = []
        started = time.perf_counter()
        for i in range(total):
            target = started + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            load.late_ms.append(max(0.0, (time.perf_counter() - target) * 1000))
            if outstanding >= max_outstanding:
                load.shed += 1
                continue
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
        load.seconds = time.perf_counter() - started
    return load


async def closed_loop(send: Send, concurrency: int, seconds: float) -> Load:
    """``concurrency`` workers, each sending its next request as soon as the previous one answered."""
    load = Load()
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(5):
            await _timed(send, session, Load())
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                await _timed(send, session, load)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        load.seconds = time.perf_counter() - started
    return load


# --- the benchmark -----------------------------------------------------------------------------------------


async def user_key(kube: Kube, namespace: str, tier: str, run: str) -> str:
    await kube.create_namespace(namespace)
    # A tier whose limits never bind here: the numbers are about the gateway, not its refusals.
    await kube.create_tier(tier, budget=100000, rpm=1000000, models=[LOGICAL_MODEL])
    await kube.wait_tier_ready(tier)
    await kube.create_user(namespace, "gw", tier, run)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = (await kube.secret_keys(namespace)).get("gw-llm-key")
        if value:
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError("the operator did not deliver the benchmark user's key")


def _added(gateway: Spread, direct: Spread) -> tuple[float, float]:
    return gateway.p50 - direct.p50, gateway.p99 - direct.p99


async def bench_overhead(
    stack_env: dict[str, str], kube: Kube, run: str, opts: OverheadOptions, result: Result
) -> None:
    namespace = tier = f"bench-gw-{run}"
    stub_url = stack_env["BEDROCK_STUB_URL"]
    gateway = stack_env["LITELLM_ADMIN_URL"].rstrip("/")
    stub = StubAdmin(stub_url)
    stub.reset()
    # Its own operator, watching only the bench namespace: no resume of other users competes for LiteLLM.
    operator = BenchOperator(stack_env, f"operator-bench-gw-{run}", proxied=False)
    try:
        await asyncio.to_thread(operator.start, WATCH_NAMESPACES=namespace)
        key = await user_key(kube, namespace, tier, run)
        signer = Signer(stub_url)
        # LiteLLM answers 401 for a few hundred ms until its key cache knows the new key.
        await asyncio.to_thread(_wait_gateway_accepts, gateway, key)

        # --- one request at a time, interleaved so both see the same machine
        say(f"sequential: {opts.sequential} direct and {opts.sequential} gateway calls, in two rounds each")
        direct_s: list[float] = []
        gateway_s: list[float] = []
        for _ in range(2):
            direct_s += await asyncio.to_thread(latency.via_raw_http, stub_url, opts.sequential // 2)
            gateway_s += await asyncio.to_thread(gateway_sequential, gateway, key, opts.sequential // 2)
        direct = Spread.of([s * 1000 for s in direct_s])
        through = Spread.of([s * 1000 for s in gateway_s])
        added50, added99 = _added(through, direct)
        result.add("direct to the stub, one at a time", direct.text())
        result.add("through LiteLLM, one at a time", through.text())
        result.add("added latency p50, one at a time", f"{added50:.1f} ms", "<= 8 ms", added50 <= 8)
        result.add("added latency p99, one at a time", f"{added99:.1f} ms", "<= 20 ms", added99 <= 20)

        # --- open loop at a fixed rate
        async def send_direct(session: aiohttp.ClientSession) -> None:
            path, body, headers = signed.pop() if signed else signer.request()
            async with session.post(
                URL(f"{stub_url}{path}", encoded=True), data=body, headers=headers
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        async def send_gateway(session: aiohttp.ClientSession) -> None:
            async with session.post(
                f"{gateway}/v1/chat/completions",
                json=gateway_body(),
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        count = int(opts.rate * opts.rate_seconds) + 20
        signed = [signer.request() for _ in range(count)]  # signing stays out of the timed path
        say(f"open loop: {opts.rate:g} requests/s for {opts.rate_seconds:g} s, direct then gateway")
        cap = int(opts.rate * 2)
        direct_rate = await open_loop(send_direct, opts.rate, opts.rate_seconds, cap)
        cpu = CpuMeter().start()
        gateway_rate = await open_loop(send_gateway, opts.rate, opts.rate_seconds, cap)
        used = cpu.stop()
        await drain(gateway)
        d_rate, g_rate = Spread.of(direct_rate.latencies_ms), Spread.of(gateway_rate.latencies_ms)
        added50, added99 = _added(g_rate, d_rate)
        result.add(f"direct at {opts.rate:g} RPS", f"{d_rate.text()}; errors {direct_rate.error_text()}")
        result.add(
            f"through LiteLLM at {opts.rate:g} RPS",
            f"{g_rate.text()}; achieved {gateway_rate.rps:.1f} RPS; errors {gateway_rate.error_text()}",
        )
        result.add(f"added latency at {opts.rate:g} RPS", f"p50 {added50:.1f} ms, p99 {added99:.1f} ms")
        result.add(f"CPU at {opts.rate:g} RPS through LiteLLM", describe(used, gateway_rate.seconds))

        # --- closed loop: the most it serves
        best_gateway: tuple[float, int] = (0.0, 0)
        for concurrency in opts.concurrency:
            say(f"closed loop: {concurrency} concurrent clients for {opts.max_seconds:g} s through LiteLLM")
            cpu = CpuMeter().start()
            load = await closed_loop(send_gateway, concurrency, opts.max_seconds)
            used = cpu.stop()
            spread = Spread.of(load.latencies_ms)
            result.add(
                f"max RPS through LiteLLM, {concurrency} concurrent clients",
                f"{load.rps:.0f} RPS (p50 {spread.p50:.0f} ms, p99 {spread.p99:.0f} ms; errors "
                f"{load.error_text()})",
                note=describe(used, load.seconds),
            )
            best_gateway = max(best_gateway, (load.rps, concurrency))
            await drain(gateway)
        result.add(
            "max RPS through LiteLLM",
            f"{best_gateway[0]:.0f} RPS (with {best_gateway[1]} concurrent clients)",
            note="one LiteLLM worker, sharing 2 cores with the rest of the stack and the load generator",
        )
        signed = []
        direct_max = await closed_loop(send_direct, max(opts.concurrency), opts.max_seconds)
        result.add(
            f"max RPS direct to the stub, {max(opts.concurrency)} concurrent clients (signing included)",
            f"{direct_max.rps:.0f} RPS; errors {direct_max.error_text()}",
        )

        # --- streaming: time to first token
        say(f"streaming: {opts.stream_samples} streams each way, stub streamDelayMs={opts.stream_delay_ms:g}")
        stub.set(streamDelayMs=opts.stream_delay_ms)
        direct_ttft: list[float] = []
        direct_total: list[float] = []
        gateway_ttft: list[float] = []
        gateway_total: list[float] = []
        async with aiohttp.ClientSession() as session:
            for i in range(opts.stream_samples + 5):
                first, total = await stream_direct(session, signer, stub_url)
                g_first, g_total = await stream_gateway(session, gateway, key)
                if i >= 5:
                    direct_ttft.append(first)
                    direct_total.append(total)
                    gateway_ttft.append(g_first)
                    gateway_total.append(g_total)
        d_first, g_first = Spread.of(direct_ttft), Spread.of(gateway_ttft)
        added50, added99 = _added(g_first, d_first)
        result.add("time to first token, direct (converse-stream)", d_first.text())
        result.add("time to first token, through LiteLLM (stream=true)", g_first.text())
        result.add("added time to first token", f"p50 {added50:.1f} ms, p99 {added99:.1f} ms")
        result.add(
            "whole stream, direct vs through LiteLLM",
            f"p50 {Spread.of(direct_total).p50:.1f} ms vs {Spread.of(gateway_total).p50:.1f} ms",
        )
        result.note(
            "Direct = raw HTTP to the stub with a SigV4 signature made before the clock starts (the floor "
            "of tests/stack/bedrock_stub/latency.py); through LiteLLM = POST /v1/chat/completions with a "
            f"GatewayUser key ({LOGICAL_MODEL} -> {latency.MODEL}), so LiteLLM signs, checks the key, budget "
            "and RPM, and tracks spend. Added latency = difference of the percentiles."
        )
        result.note(
            "The load generator runs on the same 2 cores as LiteLLM, its Node Prisma engine, Postgres and "
            "the stub: max RPS is what the whole box serves, a lower bound for LiteLLM on dedicated cores. "
            "LiteLLM runs as the stack starts it: 1 uvicorn worker."
        )
        result.note(
            f"Streaming: the stub waits {opts.stream_delay_ms:g} ms between event-stream frames, so the "
            "first token is one frame delay after the response starts."
        )
    finally:
        stub.reset()
        if opts.cleanup:
            await kube.delete_all_users(namespace, timeout=60)
            await kube.delete_tier(tier, wait=30)
        operator.close()
        if opts.cleanup:
            await kube.delete_namespace(namespace)


async def drain(gateway: str, timeout: float = 300) -> None:
    """Wait until LiteLLM answers its liveness probe within 0.5 s again: requests a client gave up on are
    still being worked through, and would slow the next measurement."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                async with session.get(f"{gateway}/health/liveliness") as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError):
                continue
            if time.perf_counter() - started < 0.5:
                return
            await asyncio.sleep(1)
    say("LiteLLM still busy after the drain timeout; the next numbers include its backlog")


def _wait_gateway_accepts(gateway: str, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            gateway_sequential(gateway, key, 0)  # its 10 warm-up calls
            return
        except RuntimeError as error:
            last = str(error)
            time.sleep(0.3)
    raise TimeoutError(f"the gateway kept refusing the new key ({last})")


async def stream_direct(session: aiohttp.ClientSession, signer: Signer, url: str) -> tuple[float, float]:
    """(ms to the first contentBlockDelta frame, ms to the end of the stream)."""
    path, body, headers = signer.request("converse-stream")
    started = time.perf_counter()
    first = 0.0
    buffer = b""
    async with session.post(URL(f"{url}{path}", encoded=True), data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"stub answered {response.status}")
        async for chunk in response.content.iter_any():
            buffer += chunk
            if not first and b"contentBlockDelta" in buffer:
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000


async def stream_gateway(session: aiohttp.ClientSession, gateway: str, key: str) -> tuple[float, float]:
    """(ms to the first SSE chunk carrying content, ms to [DONE])."""
    started = time.perf_counter()
    first = 0.0
    async with session.post(
        f"{gateway}/v1/chat/completions",
        json=gateway_body(stream=True),
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or first:
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                continue
            choices = json.loads(data).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - started
    return first * 1000, (time.perf_counter() - started) * 1000
