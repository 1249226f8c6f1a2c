"""`python -m tests.bench.kopf_toggles`: kopf's start-up wait for its indexes, as is and with
gateway_operator.kopf_scale (what a restart with N GatewayUsers spends before reconciling anything).

Each of N objects holds a toggle in one ToggleSet(all) and waits for it to be all on; the objects are indexed
one after another, the waiters running in between (as in kopf). Prints the CPU time and how often the set's
state was evaluated. Pure asyncio: no stack needed.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from kopf._cogs.aiokits import aiotoggles


class CountingSet(aiotoggles.ToggleSet):
    checks = 0

    def is_on(self) -> bool:
        CountingSet.checks += 1
        return super().is_on()


async def start_up(n: int) -> tuple[int, float]:
    CountingSet.checks = 0
    toggles = CountingSet(all)
    objects = [await toggles.make_toggle() for _ in range(n)]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(n)]
    await asyncio.sleep(0)
    started = time.process_time()
    for toggle in objects:
        await toggles.drop_toggle(toggle)
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    return CountingSet.checks, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.kopf_toggles", description=__doc__)
    parser.add_argument("--as-is", default="300,1000,3000", help="object counts for kopf unpatched")
    parser.add_argument("--patched", default="300,1000,3000,10000", help="object counts with kopf_scale")
    args = parser.parse_args()
    for label, sizes in (("kopf 1.45.2 as is", args.as_is), ("with kopf_scale", args.patched)):
        if label.startswith("with"):
            from gateway_operator import kopf_scale

            kopf_scale.install()
        for n in (int(s) for s in sizes.split(",") if s):
            checks, seconds = asyncio.run(start_up(n))
            print(f"{label:18} {n:>6} objects: {seconds:8.2f} CPU-s, {checks:>10,} state checks", flush=True)


if __name__ == "__main__":
    main()
