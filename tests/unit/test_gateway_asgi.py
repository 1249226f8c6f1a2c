"""The LiteLLM start-up hook (charts/llm-gateway/files/gateway_asgi.py) freezes the start-up heap, in a
fresh interpreter each (gc.freeze is process-wide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.stack.common import REPO_ROOT

FILES = REPO_ROOT / "charts" / "llm-gateway" / "files"


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={"PYTHONPATH": str(FILES)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_start_up_objects_leave_the_cyclic_gc() -> None:
    out = run(
        """
        import gc
        import gateway_asgi
        junk = [[i] for i in range(50_000)]  # what a worker's start-up leaves behind
        before = gc.get_freeze_count()
        gateway_asgi.freeze_startup_heap()
        print(before, gc.get_freeze_count())
        """
    )
    before, after = map(int, out.split())
    assert before == 0 and after >= 50_000


def test_in_a_running_loop_it_freezes_again_once_start_up_has_settled() -> None:
    out = run(
        """
        import asyncio, gc
        import gateway_asgi
        gateway_asgi.REFREEZE_AFTER_SECONDS = 0.05

        async def main():
            gateway_asgi.freeze_startup_heap()
            first = gc.get_freeze_count()
            late = [[i] for i in range(20_000)]  # made after the first freeze (caches, first requests)
            await asyncio.sleep(0.3)
            print(first, gc.get_freeze_count() - first)

        asyncio.run(main())
        """
    )
    first, added = map(int, out.split())
    assert first > 0 and added >= 20_000
