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

from typing import Any

HEALTH_PATH = "/health"


async def health(request: Any) -> Any:
    from litellm.proxy.health_endpoints._health_endpoints import health_readiness
    from starlette.responses import JSONResponse, Response

    probe = Response()
    body = await health_readiness(probe)
    return JSONResponse(body, status_code=probe.status_code or 200)


def install() -> None:
    """Put the public ``/health`` route first in LiteLLM's router, so it wins over LiteLLM's own."""
    from litellm.proxy.proxy_server import app
    from starlette.routing import Route

    routes = app.router.routes
    if any(getattr(r, "endpoint", None) is health for r in routes):
        return
    routes.insert(0, Route(HEALTH_PATH, health, methods=["GET", "HEAD"], include_in_schema=False))
