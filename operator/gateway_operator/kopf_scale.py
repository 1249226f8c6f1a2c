"""A start-up fix for kopf at thousands of objects (kopf 1.45.2, ``kopf._cogs.aiokits.aiotoggles``).

With indexes, kopf holds every object's first event until all objects are indexed: each waits in
``ToggleSet.wait_for`` on one ``asyncio.Condition``, and every object indexed (a toggle dropped from the set)
calls ``notify_all``, which wakes every waiter to re-acquire the lock and re-check. N objects cost ~N^2
wake-ups: after a restart with 10,010 GatewayUsers the operator spent minutes at 100% CPU in asyncio's
``call_soon``/``Condition.wait`` before reconciling anything (py-spy; BENCHMARKS.md).

``install()`` makes ``ToggleSet.wait_for`` wait on one shared future per wanted state instead, resolved by the
set's condition when a change reaches that state: one check per change, waiters woken once. Toggles keep
their condition (a subclass that also settles the set's futures), so ``Toggle.wait_for`` is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

log = logging.getLogger(__name__)

_WAITERS = "_llmgw_waiters"  # ToggleSet attribute: {wanted state: future}
_installed = False


class _SetCondition(asyncio.Condition):
    """The condition of one ToggleSet: every change (notify_all) also resolves the set's waiting future for
    the state the set is now in."""

    def __init__(self, owner: Any) -> None:
        super().__init__()
        self._owner = weakref.ref(owner)

    def notify_all(self) -> None:
        super().notify_all()  # waiters of individual toggles (Toggle.wait_for) still use the condition
        owner = self._owner()
        if owner is not None:
            settle(owner)


def settle(toggle_set: Any) -> None:
    """Wake the waiters of the state the set is in now (if any wait for it)."""
    waiters: dict[bool, asyncio.Future[None]] = getattr(toggle_set, _WAITERS)
    if not waiters:
        return
    future = waiters.pop(toggle_set.is_on(), None)
    if future is not None and not future.done():
        future.set_result(None)


async def wait_for(toggle_set: Any, state: bool) -> None:
    wanted = bool(state)
    waiters: dict[bool, asyncio.Future[None]] = getattr(toggle_set, _WAITERS)
    while toggle_set.is_on() != wanted:
        future = waiters.get(wanted)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            waiters[wanted] = future
        # Shielded: one waiter cancelled (an object deleted, the operator stopping) must not cancel the
        # future every other waiter shares.
        await asyncio.shield(future)


def install() -> bool:
    """Patch kopf's ToggleSet (idempotent). False, with a warning, if kopf's internals are not the ones this
    was written for (then kopf runs unpatched: correct, only slow to start at thousands of objects)."""
    global _installed
    if _installed:
        return True
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError:
        log.warning("kopf internals changed (no aiotoggles): start-up at scale is not patched")
        return False
    toggle_set = aiotoggles.ToggleSet
    probe = toggle_set(all)
    if not all(hasattr(probe, name) for name in ("_condition", "_toggles", "_fn", "make_toggle")):
        log.warning("kopf internals changed (ToggleSet): start-up at scale is not patched")
        return False
    original_init = toggle_set.__init__

    def patched_init(self: Any, fn: Any) -> None:
        original_init(self, fn)
        self._condition = _SetCondition(self)
        setattr(self, _WAITERS, {})

    toggle_set.__init__ = patched_init  # type: ignore[method-assign]
    toggle_set.wait_for = wait_for  # type: ignore[method-assign,assignment]
    _installed = True
    return True
