"""`python -m gateway_operator`: run the operator (kopf) with settings from the environment.

The liveness endpoint is http://HEALTH_HOST:HEALTH_PORT/healthz (kopf's; 200 once the operator runs).
"""

from __future__ import annotations

import logging
import sys

import kopf

from gateway_operator.settings import load


class _RedactKeys(logging.Filter):
    """Last line of defence: no log record leaves the process with something shaped like a key."""

    def filter(self, record: logging.LogRecord) -> bool:
        from gateway_operator.clients.litellm import redact

        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_RedactKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "kubernetes_asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    settings = load()
    configure_logging(settings.log_level)
    if not settings.litellm_master_key.get_secret_value():
        logging.getLogger("gateway_operator").error("LITELLM_MASTER_KEY is not set")
        sys.exit(2)
    import gateway_operator.handlers  # noqa: F401  (registers the handlers)

    namespaces = settings.namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        standalone=not settings.peering,
        peering_name=settings.peering or None,
    )


if __name__ == "__main__":
    main()
