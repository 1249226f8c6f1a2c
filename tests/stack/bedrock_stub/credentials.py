"""Where the stub learns the secret behind an access key id, to recompute SigV4 signatures.

Two sources: static pairs from configuration (``AKID:SECRET[:TOKEN]``), and moto's STS server. moto keeps
every credential it issues (AssumeRole, AssumeRoleWithWebIdentity) as an ``AssumedRole`` model, and its own
dashboard API ``GET /moto-api/data.json`` lists those models with their ``access_key_id``,
``secret_access_key`` and ``session_token``. That is the stub's view of "what STS issued": a key id moto
never issued is unknown, exactly as Bedrock would find it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp

from .sigv4 import Secret

# An unknown key id triggers a fresh read of moto's models at most this often (a bad client cannot make
# the stub hammer moto).
_REFRESH_INTERVAL = 0.25
log = logging.getLogger("bedrock_stub")


def parse_static(spec: str) -> dict[str, Secret]:
    """``AKID:SECRET[:TOKEN],AKID2:SECRET2`` -> secrets by key id."""
    secrets: dict[str, Secret] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key_id, _, rest = item.partition(":")
        secret, _, token = rest.partition(":")
        if not key_id or not secret:
            raise ValueError("static credentials must look like AKID:SECRET[:TOKEN]")
        secrets[key_id] = Secret(secret, token or None)
    return secrets


class CredentialStore:
    def __init__(self, static: Mapping[str, Secret] | None = None, sts_url: str | None = None) -> None:
        self._known: dict[str, Secret] = dict(static or {})
        self._sts_url = sts_url.rstrip("/") if sts_url else None
        self._lock = asyncio.Lock()
        self._last_refresh = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def lookup(self, access_key_id: str) -> Secret | None:
        secret = self._known.get(access_key_id)
        if secret is not None or self._sts_url is None:
            return secret
        async with self._lock:
            if (
                access_key_id not in self._known
                and time.monotonic() - self._last_refresh >= _REFRESH_INTERVAL
            ):
                try:
                    await self._refresh_from_moto()
                except (TimeoutError, aiohttp.ClientError, ValueError) as error:
                    log.warning("could not read issued credentials from moto at %s: %s", self._sts_url, error)
        return self._known.get(access_key_id)

    async def _refresh_from_moto(self) -> None:
        assert self._sts_url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._last_refresh = time.monotonic()
        async with self._session.get(f"{self._sts_url}/moto-api/data.json") as response:
            response.raise_for_status()
            data = await response.json(content_type=None)
        for role in data.get("sts", {}).get("AssumedRole", []):
            key_id, secret = role.get("access_key_id"), role.get("secret_access_key")
            if key_id and secret:
                self._known[key_id] = Secret(secret, role.get("session_token"))
