"""Unauthenticated, model-free ``GET /health`` for the LLM gateway (LiteLLM proxy 1.108.7).

The user guide promises ``GET /health`` without auth. LiteLLM's own ``/health`` needs a key and calls every
configured model for real (it costs money), and ``general_settings.public_routes`` is honoured only for
Enterprise deployments. This module adds a ``/health`` route *in front of* LiteLLM's, answering what LiteLLM's
public ``/health/readiness`` answers: 200 ``{"status": "healthy", "db": "connected"}``, or 503 when the
database is unreachable or the worker is draining.

It is loaded by LiteLLM itself, with the official ``litellm`` command unchanged, through LiteLLM's worker
startup hook (run in every worker's lifespan, before it serves a request)::

    PYTHONPATH=<folder holding this file>
    LITELLM_WORKER_STARTUP_HOOKS=gateway_asgi:install

Standard library and LiteLLM's own dependencies only (it is mounted from a ConfigMap into the official image).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

HEALTH_PATH = "/health"
# Start-up has settled by then (model list, caches, the first DB reads): freeze what it left behind too.
REFREEZE_AFTER_SECONDS = 30.0


async def health(request: Any) -> Any:
    from litellm.proxy.health_endpoints._health_endpoints import health_readiness
    from starlette.responses import JSONResponse, Response

    probe = Response()
    body = await health_readiness(probe)
    return JSONResponse(body, status_code=probe.status_code or 200)


def freeze_startup_heap() -> None:
    """Move the ~1.4 M objects a started LiteLLM worker holds out of the cyclic GC's reach.

    Otherwise every full (generation 2) collection walks all of them, and the event loop stalls for
    1-4 s on 2 cores (measured: one 2.5 s stall in 2,500 requests); frozen, one costs ~0.1 s. Objects
    that become garbage later are still collected; frozen ones are only never freed, and they live for
    the whole process anyway."""
    gc.freeze()
    with contextlib.suppress(RuntimeError):  # no running loop: the start-up freeze is all there is
        asyncio.get_running_loop().call_later(REFREEZE_AFTER_SECONDS, gc.freeze)


def install() -> None:
    """Put the public ``/health`` route first in LiteLLM's router, so it wins over LiteLLM's own,
    and freeze the start-up heap (see ``freeze_startup_heap``)."""
    from litellm.proxy.proxy_server import app
    from starlette.routing import Route

    routes = app.router.routes
    if any(getattr(r, "endpoint", None) is health for r in routes):
        return
    routes.insert(0, Route(HEALTH_PATH, health, methods=["GET", "HEAD"], include_in_schema=False))
    freeze_startup_heap()
