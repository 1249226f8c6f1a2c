"""Typed client of the LiteLLM admin API (the subset the operator needs): one method per endpoint.

- At most ``max_concurrency`` requests in flight (one semaphore for the whole process).
- 5xx, 429 and connection errors are retried with exponential backoff and jitter, then raised as
  ``BackendUnavailable``. Writes are retried too: every write the services make is safe to repeat
  (a repeated create answers "already exists", which they handle).
- Domain errors carry the endpoint and LiteLLM's message with anything that looks like a key
  redacted; neither key values nor the master key ever reach an exception, a log line or a metric.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr, field_validator

from gateway_operator import metrics
from gateway_operator.models import KeyRecord, TeamRecord, UserRecord

log = logging.getLogger(__name__)

_KEYLIKE = re.compile(r"sk-[A-Za-z0-9_\-.]+")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


# Reconciles admitted at once per admin call slot (``LiteLLMClient.turns``): enough to keep every slot busy
# while the admitted ones also talk to Kubernetes (3 API calls around the 2 admin calls of a create).
TURNS_PER_CALL = 4


def redact(text: str) -> str:
    return _KEYLIKE.sub("sk-***", text)


class LiteLLMError(Exception):
    """Base of the domain errors; ``str()`` is safe to log and to show in a condition."""

    def __init__(self, endpoint: str, message: str, status: int | None = None):
        self.endpoint = endpoint
        self.status = status
        self.detail = redact(message)[:500]
        prefix = f"LiteLLM {endpoint}" + (f" answered {status}" if status is not None else "")
        super().__init__(f"{prefix}: {self.detail}" if self.detail else prefix)


class BackendUnavailable(LiteLLMError):
    """LiteLLM could not be reached or kept failing with 5xx after the retries."""


class NotFound(LiteLLMError):
    pass


class Conflict(LiteLLMError):
    """The object already exists (duplicate key alias, team id, user id)."""


class InvalidRequest(LiteLLMError):
    """LiteLLM rejected the request (4xx other than 401/403/404/409): retrying will not help."""


class Unauthorized(LiteLLMError):
    """401/403: the master key is wrong or lacks rights (a configuration problem of the operator)."""


class UserRow(UserRecord):
    """The user row as /v2/user/info answers it: with the ids of the teams the user is a member of."""

    teams: tuple[str, ...] = ()

    @field_validator("teams", mode="before")
    @classmethod
    def _none_as_no_teams(cls, value: Any) -> Any:
        return () if value is None else value


@dataclass(frozen=True)
class KeyPage:
    keys: tuple[KeyRecord, ...]
    total_count: int
    total_pages: int


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload))
        if isinstance(error, dict):
            inner = error.get("message", error.get("error", error))
            return str(inner)
        return str(error)
    return str(payload)


def _is_duplicate(message: str) -> bool:
    lowered = message.lower()
    return "already exists" in lowered or ("unique" in lowered and "alias" in lowered)


class LiteLLMClient:
    def __init__(
        self,
        base_url: str,
        master_key: SecretStr,
        *,
        max_concurrency: int = 10,
        timeout: float = 15.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._master_key = master_key
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._semaphore = asyncio.Semaphore(max_concurrency)
        # A reconcile takes a turn BEFORE it reads its object or builds anything (handlers._reconcile_user):
        # the rest of a burst waits there as a couple of small frames each, not halfway through a reconcile
        # holding a fetched body, its views and a request body (tests/bench/burst_memory.py).
        self.turns = asyncio.Semaphore(TURNS_PER_CALL * max_concurrency)
        self._retries = retries
        self._backoff = backoff
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: Counter[str] = Counter()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LiteLLMClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- transport ------------------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._master_key.get_secret_value()}"}
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls[f"{method} {path}"] += 1
            metrics.LITELLM_REQUESTS.labels(method=method, endpoint=path).inc()
            started = time.monotonic()
            try:
                return await self._http.request(method, path, params=params, json=body, headers=headers)
            finally:
                self.in_flight -= 1
                log.debug("LiteLLM %s %s took %.3fs", method, path, time.monotonic() - started)

    async def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._send(method, path, params=params, body=body)
            except httpx.TransportError as error:
                failure: LiteLLMError = BackendUnavailable(path, type(error).__name__)
                metrics.LITELLM_ERRORS.labels(method=method, endpoint=path, error=type(error).__name__).inc()
            else:
                if response.status_code < 400:
                    return response.json() if response.content else None
                failure = self._classify(path, response)
                metrics.LITELLM_ERRORS.labels(
                    method=method, endpoint=path, error=str(response.status_code)
                ).inc()
                if not isinstance(failure, BackendUnavailable):
                    raise failure
            if attempt >= self._retries:
                raise failure
            delay = min(8.0, self._backoff * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s; retry %d/%d in %.1fs", failure, attempt + 1, self._retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    @staticmethod
    def _classify(path: str, response: httpx.Response) -> LiteLLMError:
        status = response.status_code
        message = _error_message(response)
        if status in _RETRY_STATUS:
            return BackendUnavailable(path, message, status)
        if status in (401, 403):
            return Unauthorized(path, message, status)
        if status == 404:
            return NotFound(path, message, status)
        if status == 409 or (status == 400 and _is_duplicate(message)):
            return Conflict(path, message, status)
        return InvalidRequest(path, message, status)

    # --- health ---------------------------------------------------------------------------------------

    async def ready(self) -> bool:
        try:
            response = await self._http.get("/health/readiness", timeout=5.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    # --- teams ----------------------------------------------------------------------------------------

    async def team_info(self, team_id: str) -> TeamRecord | None:
        try:
            payload = await self._request("GET", "/team/info", params={"team_id": team_id})
        except NotFound:
            return None
        info = payload.get("team_info") or {}
        return TeamRecord.model_validate({**info, "team_id": info.get("team_id", team_id)})

    async def team_new(self, body: Mapping[str, Any]) -> TeamRecord:
        payload = await self._request("POST", "/team/new", body=dict(body))
        return TeamRecord.model_validate(payload)

    async def team_update(self, team_id: str, changes: Mapping[str, Any]) -> None:
        await self._request("POST", "/team/update", body={"team_id": team_id, **changes})

    async def team_delete(self, team_ids: list[str]) -> bool:
        """Deletes the teams AND every key in them. False if none existed."""
        try:
            await self._request("POST", "/team/delete", body={"team_ids": team_ids})
        except NotFound:
            return False
        return True

    # --- users ----------------------------------------------------------------------------------------

    async def user_info(self, user_id: str) -> UserRow | None:
        try:
            payload = await self._request("GET", "/user/info", params={"user_id": user_id})
        except NotFound:
            return None
        info = payload.get("user_info")
        if not info:
            return None
        return UserRow.model_validate({**info, "user_id": info.get("user_id") or user_id})

    async def user_row(self, user_id: str) -> UserRow | None:
        """The user row and its team ids, without /user/info's keys and teams: for a team member,
        /user/info embeds every key of each of the user's teams (O(team size) per call)."""
        try:
            payload = await self._request("GET", "/v2/user/info", params={"user_id": user_id})
        except NotFound:
            return None
        if not isinstance(payload, dict) or not payload:
            return None
        return UserRow.model_validate({**payload, "user_id": payload.get("user_id") or user_id})

    async def user_new(self, body: Mapping[str, Any]) -> tuple[str, ...]:
        """Creates the user; returns the ids of the teams it is a member of after the call (LiteLLM reads
        them back when the body names teams; () otherwise)."""
        payload = await self._request("POST", "/user/new", body=dict(body))
        teams = payload.get("teams") if isinstance(payload, dict) else None
        return tuple(str(t) for t in teams or () if isinstance(t, str))

    async def user_update(self, user_id: str, changes: Mapping[str, Any]) -> None:
        await self._request("POST", "/user/update", body={"user_id": user_id, **changes})

    async def user_delete(self, user_ids: list[str]) -> bool:
        """Deletes the users and their keys. False if none existed."""
        try:
            await self._request("POST", "/user/delete", body={"user_ids": user_ids})
        except NotFound:
            return False
        return True

    # --- team membership ------------------------------------------------------------------------------

    async def team_member_add(self, team_id: str, user_id: str) -> bool:
        """Adds the user to the team with role "user" and no member budget (False: a member already)."""
        body = {"team_id": team_id, "member": {"user_id": user_id, "role": "user"}}
        try:
            await self._request("POST", "/team/member_add", body=body)
        except InvalidRequest as error:
            # LiteLLM's message lists every member of the team: never re-raise it.
            if "already in team" in error.detail:
                return False
            raise InvalidRequest(error.endpoint, "member add refused", error.status) from None
        return True

    async def team_member_delete(self, team_id: str, user_id: str) -> bool:
        """Removes the user from the team. LiteLLM ALSO DELETES every key of that user in that team.
        False if the user was not a member (or the team does not exist)."""
        try:
            await self._request("POST", "/team/member_delete", body={"team_id": team_id, "user_id": user_id})
        except InvalidRequest as error:
            if "not found in team" in error.detail or "does not exist" in error.detail:
                return False
            raise
        return True

    # --- keys -----------------------------------------------------------------------------------------

    async def key_list(
        self,
        *,
        key_alias: str | None = None,
        team_id: str | None = None,
        user_id: str | None = None,
        page: int = 1,
        size: int = 100,
        substring: bool = False,
    ) -> KeyPage:
        params: dict[str, Any] = {
            "return_full_object": "true",
            "page": page,
            "size": size,
            # Oldest first, so keys created during a walk land on later pages instead of shifting.
            "sort_by": "created_at",
            "sort_order": "asc",
        }
        if key_alias is not None:
            params["key_alias"] = key_alias
            if substring:  # 'contains', not 'starts with': callers filter
                params["substring_matching"] = "true"
        if team_id is not None:
            params["team_id"] = team_id
        if user_id is not None:
            params["user_id"] = user_id
        payload = await self._request("GET", "/key/list", params=params)
        keys = tuple(KeyRecord.model_validate(k) for k in payload.get("keys", []) if isinstance(k, dict))
        return KeyPage(
            keys=keys,
            total_count=int(payload.get("total_count") or 0),
            total_pages=int(payload.get("total_pages") or 0),
        )

    async def team_keys(self, team_id: str) -> tuple[KeyRecord, ...] | None:
        """Every key of the team in ONE call: /team/info answers with all of them, unpaginated and with
        their token (LiteLLM 1.108.7's attempt to strip the token works on a copy). None when the answer
        does not carry a token for each key (another LiteLLM version) or the team does not exist: page
        /key/list instead."""
        try:
            payload = await self._request("GET", "/team/info", params={"team_id": team_id})
        except NotFound:
            return None  # no such team: /key/list tells whether keys name it anyway
        raw = payload.get("keys") if isinstance(payload, dict) else None
        if not isinstance(raw, list) or not all(isinstance(k, dict) and k.get("token") for k in raw):
            return None
        return tuple(KeyRecord.model_validate(k) for k in raw)

    async def key_by_alias(self, alias: str) -> KeyRecord | None:
        page = await self.key_list(key_alias=alias, size=10)
        matches = [k for k in page.keys if k.key_alias == alias]
        return matches[0] if matches else None

    async def key_info(self, token: str) -> KeyRecord | None:
        """Key by LiteLLM hash (never pass a raw key: it would land in URLs). Deleted keys come back
        from LiteLLM's archive with status "deleted"."""
        try:
            payload = await self._request("GET", "/key/info", params={"key": token})
        except NotFound:
            return None
        info = payload.get("info") or {}
        return KeyRecord.model_validate({**info, "token": token})

    async def key_generate(self, body: Mapping[str, Any]) -> KeyRecord:
        payload = await self._request("POST", "/key/generate", body=dict(body))
        payload.pop("key", None)  # the raw key; the caller already has it
        token = payload.get("token") or payload.get("token_id")
        return KeyRecord.model_validate({**payload, "token": token})

    async def key_update(self, token: str, changes: Mapping[str, Any]) -> None:
        await self._request("POST", "/key/update", body={"key": token, **changes})

    async def key_delete(self, *, tokens: list[str] | None = None, aliases: list[str] | None = None) -> bool:
        """False if none of them existed (LiteLLM answers 404 then). Tokens and aliases go in separate
        requests: given both, LiteLLM 1.108.7 deletes the ``keys`` and silently ignores ``key_aliases``."""
        deleted = False
        for field, values in (("keys", tokens), ("key_aliases", aliases)):
            if not values:
                continue
            try:
                await self._request("POST", "/key/delete", body={field: values})
            except NotFound:
                continue
            deleted = True
        return deleted
