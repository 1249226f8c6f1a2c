"""The operator's Kubernetes client under a burst: CPU per request and wall time for N concurrent GETs at
several connection-pool sizes (the gate in clients/kubernetes.py follows the pool size). Each GET
reads a GatewayTier that does not exist (a 404: the same request path as every read, a tiny answer).

    python -m tests.bench.kube_pool --requests 1000 --connections 32,8,4

Needs a Kubernetes API (KUBECONFIG; the local stack's: ``source .stack/env``). Prints, per pool size, the
CPU milliseconds per request of this process and the wall time of each round; a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from gateway_operator.clients import kubernetes as k8s


async def rounds(requests: int, connections: int, repeat: int, gate: bool) -> list[tuple[float, float]]:
    k8s.LIMITS = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    k8s.IN_FLIGHT = connections if gate else requests  # no gate: every request queues inside httpcore
    client = await k8s.KubernetesClient.connect()

    def probe() -> Awaitable[dict[str, Any] | None]:
        return client.get_object("gatewaytiers", "bench-pool-probe")

    try:
        await probe()
        out = []
        for _ in range(repeat):
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.gather(*(probe() for _ in range(requests)))
            out.append((1000 * (time.process_time() - cpu) / requests, time.monotonic() - wall))
        return out
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.kube_pool", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", default="32,8,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gate", choices=("on", "off", "both"), default="both", help="the client's gate")
    args = parser.parse_args()
    gates = {"on": [True], "off": [False], "both": [False, True]}[args.gate]
    sizes = [int(c) for c in args.connections.split(",")]
    for gate, connections in ((g, c) for g in gates for c in sizes):
        result = asyncio.run(rounds(args.requests, connections, args.repeat, gate))
        cpu = [c for c, _ in result]
        wall = [w for _, w in result]
        print(
            f"{args.requests} concurrent GETs, {connections} connections, gate {'on' if gate else 'off'}: "
            f"CPU per request median "
            f"{statistics.median(cpu):.2f} ms ({min(cpu):.2f}-{max(cpu):.2f}), wall median "
            f"{statistics.median(wall):.1f} s ({min(wall):.1f}-{max(wall):.1f}), n={len(result)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
