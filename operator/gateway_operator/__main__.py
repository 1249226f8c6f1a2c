"""`python -m gateway_operator`: run the operator (kopf) with settings from the environment.

The liveness endpoint is http://HEALTH_HOST:HEALTH_PORT/healthz (kopf's; 200 once the operator runs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from gateway_operator.settings import load

# Kubernetes client libraries kopf imports if installed (typing shims, login piggybacking), and httpx's
# command-line client, which httpx imports if click, rich and pygments are installed (typer brings
# them for the CLI): ~5 MiB the operator never uses.
UNUSED_MODULES = ("kubernetes_asyncio", "kubernetes", "pykube", "httpx._main")


def hide_client_libraries() -> None:
    """Make the client libraries (and httpx's CLI) unimportable in this process, before kopf is imported.

    kubernetes_asyncio (needed by the CLI, so installed) alone costs ~75 MiB of RSS and seconds of
    start-up for ~700 generated model classes. The operator talks to the API with kopf's own aiohttp
    client and clients/kubernetes.py (httpx); without the libraries kopf logs in with its built-in
    service-account / kubeconfig login, the same one clients/kubernetes.py uses. Only for the operator
    process: called from main(), never on import (tests import this module)."""
    for name in UNUSED_MODULES:
        if sys.modules.get(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]


def tune_malloc() -> None:
    """glibc malloc settings for this long-running asyncio process, unless the environment sets them.

    Most of the operator's growth per user is not live objects but heap that glibc keeps after a burst:
    each TLS connection to the API server has a 256 KiB read buffer (asyncio's sslproto), and kopf
    opens a connection per concurrent request; glibc's dynamic mmap threshold soon serves those from
    the heap, which then stays fragmented, and every executor thread gets its own arena. A fixed
    threshold keeps such buffers in mmap (returned on close) and two arenas are plenty here: measured
    ~86 instead of ~105 MiB at 300 users. Same effect as MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072,
    but it ships with the code (chart, image, local stack alike). No-op where libc is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # <malloc.h>
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(m_arena_max, 2)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(m_mmap_threshold, 128 * 1024)


# After a burst the freed memory stays with the process: glibc returns the free pages inside its heap only on
# malloc_trim(). A thread looks at the process's CPU time: once a busy stretch (a burst, a resume pass, a
# resync) is followed by a quiet interval, it trims, once.
TRIM_POLL_SECONDS = 5.0
TRIM_AFTER_CPU_SECONDS = 2.0  # CPU used since the last trim that makes a quiet interval worth a trim
TRIM_QUIET_SHARE = 0.05  # a quiet interval: less than this share of one core


def trim_when_idle(
    cpu: Callable[[], float],
    trim: Callable[[], object],
    wait: Callable[[float], object],
    poll: float = TRIM_POLL_SECONDS,
) -> None:
    """Forever: ``wait(poll)``, then ``trim()`` if the interval was quiet after enough work."""
    last = since_trim = cpu()
    while True:
        wait(poll)
        now = cpu()
        quiet = now - last < TRIM_QUIET_SHARE * poll
        last = now
        if quiet and now - since_trim >= TRIM_AFTER_CPU_SECONDS:
            trim()
            since_trim = cpu()


def start_trimming() -> None:
    """No-op where libc is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import threading
    import time

    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    thread = threading.Thread(
        target=trim_when_idle,
        args=(time.process_time, lambda: malloc_trim(0), time.sleep),
        name="malloc-trim",
        daemon=True,
    )
    thread.start()


# Diagnosis only (tests/bench/burst_memory.py): with TRACEMALLOC_DUMP=<path> in the environment, each SIGUSR1
# writes a tracemalloc snapshot to <path>.<n>; the first one also starts tracing (25 frames) unless
# PYTHONTRACEMALLOC started it with the interpreter (tracing the imports: over 60 s to start on a loaded box).
TRACEMALLOC_DUMP = "TRACEMALLOC_DUMP"


def install_snapshot_dump() -> None:
    target = os.environ.get(TRACEMALLOC_DUMP)
    if not target:
        return
    import itertools
    import signal
    import tracemalloc

    numbers = itertools.count(1)

    def dump(signum: int, frame: object) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(25)
        path = f"{target}.{next(numbers)}"
        tracemalloc.take_snapshot().dump(path + ".tmp")
        os.replace(path + ".tmp", path)  # complete when it appears under its name

    signal.signal(signal.SIGUSR1, dump)


class _RedactKeys(logging.Filter):
    """Last line of defence: no log record leaves the process with something shaped like a key."""

    def filter(self, record: logging.LogRecord) -> bool:
        from gateway_operator.clients.litellm import redact

        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class _ObjectPrefixFormatter(logging.Formatter):
    """Kopf attaches the object a handler works on as ``k8s_ref``: name it in the line ([ns/name])."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ref = getattr(record, "k8s_ref", None)
        if not isinstance(ref, dict) or not ref.get("name"):
            return line
        namespace = ref.get("namespace")
        prefix = f"[{namespace}/{ref['name']}]" if namespace else f"[{ref['name']}]"
        head, sep, message = line.partition(": ")
        return f"{head}{sep}{prefix} {message}" if sep else f"{prefix} {line}"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ObjectPrefixFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_RedactKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    tune_malloc()
    install_snapshot_dump()
    start_trimming()
    hide_client_libraries()
    import kopf

    settings = load()
    configure_logging(settings.log_level)
    if not settings.litellm_master_key.get_secret_value():
        logging.getLogger("gateway_operator").error("LITELLM_MASTER_KEY is not set")
        sys.exit(2)
    import gateway_operator.handlers  # noqa: F401  (registers the handlers)

    namespaces = settings.namespaces
    priority = settings.effective_peering_priority
    if settings.peering:
        logging.getLogger("gateway_operator").info(
            "peering %r with priority %d (lifetime %ds): the live replica of the highest priority acts",
            settings.peering,
            priority,
            settings.peering_lifetime_seconds,
        )
    kopf.run(
        priority=priority,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        standalone=not settings.peering,
        peering_name=settings.peering or None,
    )


if __name__ == "__main__":
    main()
