"""LiteLLM admin client: error classification, retries with backoff, the concurrency cap, redaction."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from pydantic import SecretStr

from gateway_operator.clients.litellm import (
    BackendUnavailable,
    Conflict,
    InvalidRequest,
    LiteLLMClient,
    NotFound,
    Unauthorized,
    redact,
)

MASTER = "sk-master-very-secret-0123456789"


def client(handler: object, **kwargs: object) -> LiteLLMClient:
    options = {"retries": 3, "backoff": 0.0, **kwargs}
    return LiteLLMClient(
        "http://litellm.test",
        SecretStr(MASTER),
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "code": str(status)}})


async def test_5xx_and_connection_errors_are_retried_then_succeed() -> None:
    answers: list[object] = [error(503, "busy"), httpx.ConnectError("refused"), error(500, "db")]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {MASTER}"
        if answers:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            assert isinstance(answer, httpx.Response)
            return answer
        return httpx.Response(200, json={"user_id": "a@b.c", "user_info": {"user_id": "a@b.c", "spend": 1}})

    c = client(handler)
    user = await c.user_info("a@b.c")
    assert user is not None and user.spend == 1
    assert c.calls["GET /user/info"] == 4


async def test_persistent_5xx_becomes_backend_unavailable() -> None:
    c = client(lambda request: error(502, "bad gateway"), retries=2)
    with pytest.raises(BackendUnavailable) as caught:
        await c.team_info("t")
    assert caught.value.status == 502 and c.calls["GET /team/info"] == 3


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (
            400,
            "Key with alias 'x' already exists. Unique key aliases across all keys are required.",
            Conflict,
        ),
        (400, "Team id = llmgw-tier-a already exists. Please use a different team id.", Conflict),
        (409, "User with id a@b.c already exists", Conflict),
        (400, "Invalid budget_duration", InvalidRequest),
        (422, "validation", InvalidRequest),
        (401, "Authentication Error", Unauthorized),
        (404, "not found", NotFound),
    ],
)
async def test_errors_are_classified_without_retry(status: int, message: str, kind: type[Exception]) -> None:
    c = client(lambda request: error(status, message))
    with pytest.raises(kind):
        await c.key_generate({"key_alias": "x"})
    assert c.calls["POST /key/generate"] == 1


async def test_missing_things_are_none_or_false() -> None:
    c = client(lambda request: error(404, "No keys found"))
    assert await c.key_info("abc") is None
    assert await c.user_info("a@b.c") is None
    assert await c.team_info("t") is None
    assert await c.key_delete(aliases=["a"]) is False
    assert await c.user_delete(["a@b.c"]) is False
    assert await c.team_delete(["t"]) is False


async def test_key_values_never_reach_exceptions_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    leaked = "sk-user-secret-abcdefghijklmnop"
    c = client(lambda request: error(500, f"could not store {leaked}"), retries=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailable) as caught:
        await c.key_generate({"key": leaked, "key_alias": "a"})
    assert leaked not in str(caught.value) and "sk-***" in str(caught.value)
    assert leaked not in caplog.text and MASTER not in caplog.text
    assert redact(f"x {leaked} y") == "x sk-*** y"


async def test_generate_never_returns_the_raw_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"key": "sk-raw-value-1234567890", "token": "f" * 64, "key_alias": "a"}
        )

    record = await client(handler).key_generate({"key": "sk-raw-value-1234567890"})
    assert record.token == "f" * 64
    assert "sk-raw" not in record.model_dump_json()


async def test_no_more_than_the_configured_calls_are_in_flight() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"keys": [], "total_count": 0, "total_pages": 0})

    c = client(handler, max_concurrency=4)
    await asyncio.gather(*(c.key_list(team_id=f"t{i}") for i in range(40)))
    assert peak == 4 and c.max_in_flight == 4


async def test_key_list_asks_for_full_objects_oldest_first() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(
            200,
            json={
                "keys": [{"token": "a" * 64, "key_alias": "llmgw.demo.x", "spend": None, "models": None}],
                "total_count": 1,
                "total_pages": 1,
            },
        )

    page = await client(handler).key_list(team_id="llmgw-tier-coding", page=2)
    params = dict(seen[0].params)
    assert params["return_full_object"] == "true" and params["team_id"] == "llmgw-tier-coding"
    assert (params["page"], params["size"], params["sort_by"], params["sort_order"]) == (
        "2",
        "100",
        "created_at",
        "asc",
    )
    assert page.keys[0].spend == 0.0 and page.keys[0].models == ()


def test_operator_log_filter_redacts_key_shaped_text(caplog: pytest.LogCaptureFixture) -> None:
    from gateway_operator.__main__ import _RedactKeys

    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "got %s", ("sk-abcdefghijklmnopqrstuvwxyz0123",), None
    )
    assert _RedactKeys().filter(record)
    assert record.getMessage() == "got sk-***"
