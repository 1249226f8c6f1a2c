"""kopf_scale: kopf's ToggleSet.wait_for without a wake-up of every waiter on every change (start-up with
thousands of objects). Same semantics as kopf's, O(N) checks instead of O(N^2)."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.aiokits import aiotoggles

from gateway_operator import kopf_scale

assert kopf_scale.install()


class CountingSet(aiotoggles.ToggleSet):
    """A ToggleSet that counts how often its state is evaluated."""

    checks = 0

    def is_on(self) -> bool:
        CountingSet.checks += 1
        return super().is_on()


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_wake_only_when_every_toggle_is_dropped_as_at_kopf_start_up() -> None:
    # kopf's start-up: one toggle per object in an all-set; each object's first event waits for True.
    n = 300
    toggles = aiotoggles.ToggleSet(all)
    objects = [await toggles.make_toggle(name=f"o{i}") for i in range(n)]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(n)]
    for toggle in objects[:-1]:
        await toggles.drop_toggle(toggle)
    await _settle_loop()
    assert not any(w.done() for w in waiters)
    await toggles.drop_toggle(objects[-1])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)


async def test_checks_grow_linearly_with_objects_not_quadratically() -> None:
    # kopf's own wait_for re-checks every waiter on every change: 90,300 checks here (measured unpatched).
    n = 300
    CountingSet.checks = 0
    toggles = CountingSet(all)
    objects = [await toggles.make_toggle() for _ in range(n)]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(n)]
    await _settle_loop()
    for toggle in objects:
        await toggles.drop_toggle(toggle)
        await asyncio.sleep(0)  # as in kopf, the waiters run between two objects being indexed
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert CountingSet.checks <= 5 * n


async def test_turning_toggles_on_and_back_off_before_waking() -> None:
    toggles = aiotoggles.ToggleSet(all)
    toggle = await toggles.make_toggle(False)
    waiter = asyncio.create_task(toggles.wait_for(True))
    await _settle_loop()
    await toggle.turn_to(True)
    await toggle.turn_to(False)  # before the waiter ran: it must see False again and keep waiting
    await _settle_loop()
    assert not waiter.done()
    await toggle.turn_to(True)
    await asyncio.wait_for(waiter, timeout=5)


async def test_an_any_set_waited_for_off_as_for_the_operator_pause() -> None:
    paused = aiotoggles.ToggleSet(any)
    reason = await paused.make_toggle(True, name="peering")
    resumed = asyncio.create_task(paused.wait_for(False))
    await _settle_loop()
    assert not resumed.done()
    await reason.turn_to(False)
    await asyncio.wait_for(resumed, timeout=5)
    assert paused.is_off()


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    toggles = aiotoggles.ToggleSet(all)
    toggle = await toggles.make_toggle(False)
    cancelled = asyncio.create_task(toggles.wait_for(True))
    kept = asyncio.create_task(toggles.wait_for(True))
    await _settle_loop()
    cancelled.cancel()
    await _settle_loop()
    assert cancelled.cancelled() and not kept.done()
    await toggle.turn_to(True)
    await asyncio.wait_for(kept, timeout=5)


async def test_an_already_reached_state_returns_at_once_and_single_toggles_still_work() -> None:
    toggles = aiotoggles.ToggleSet(all)
    await asyncio.wait_for(toggles.wait_for(True), timeout=1)  # empty all-set: on
    toggle = await toggles.make_toggle(False)
    own: Any = asyncio.create_task(toggle.wait_for(True))  # Toggle.wait_for: kopf's, on the same condition
    await _settle_loop()
    assert not own.done()
    await toggle.turn_to(True)
    await asyncio.wait_for(own, timeout=5)


def test_install_is_idempotent() -> None:
    assert kopf_scale.install() and kopf_scale.install()
