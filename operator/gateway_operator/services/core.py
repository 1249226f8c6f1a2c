"""What every service needs: the two clients, settings, per-object locks and an event sink."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway_operator.clients.kubernetes import KubernetesClient
from gateway_operator.clients.litellm import LiteLLMClient
from gateway_operator.models import ObjectRef
from gateway_operator.settings import Settings

EventType = Literal["Normal", "Warning"]


class EventSink(Protocol):
    """Posts a Kubernetes Event about an object (kind is GatewayUser or GatewayTier)."""

    def __call__(self, kind: str, ref: ObjectRef, type_: EventType, reason: str, message: str) -> None: ...


def no_events(kind: str, ref: ObjectRef, type_: EventType, reason: str, message: str) -> None:
    return None


def mint_key() -> str:
    """A new LiteLLM key value: 'sk-' + 43 url-safe characters (256 bits)."""
    return "sk-" + secrets.token_urlsafe(32)


def looks_minted(value: str | None) -> bool:
    """Only values of our own shape are registered; anything else in a Secret counts as lost."""
    if not value or not value.startswith("sk-") or len(value) < 40 or len(value) > 128:
        return False
    return all(c.isalnum() or c in "-_" for c in value[3:])


@dataclass
class Services:
    litellm: LiteLLMClient
    kube: KubernetesClient
    settings: Settings
    events: EventSink = no_events
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        """Serialises reconciles of one object between kopf handlers, tier propagation and resync."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield

    def forget_lock(self, key: str) -> None:
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]
