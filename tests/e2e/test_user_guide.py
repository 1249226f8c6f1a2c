"""Every promise of the user guide, through the gateway, with keys the operator put in Secrets."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import GatewayUserHandle


def client_for(user: GatewayUserHandle) -> OpenAI:
    return OpenAI(api_key=user.api_key, base_url=user.base_url, max_retries=0, timeout=60)


def first_of_next_month_utc(now: datetime) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def coder(make_user: Callable[..., GatewayUserHandle]) -> GatewayUserHandle:
    return make_user("coding")


def test_secret_base_url_is_the_gateway(coder: GatewayUserHandle, gateway_url: str) -> None:
    assert coder.base_url.rstrip("/") == gateway_url
    assert coder.api_key.startswith("sk-")


def test_health_needs_no_auth(gateway_root: str) -> None:
    for path in ("/health", "/health/liveliness", "/health/readiness"):
        response = httpx.get(gateway_root + path, timeout=10)
        assert response.status_code == 200, (path, response.text[:200])


def test_models_lists_exactly_the_tier_models(coder: GatewayUserHandle) -> None:
    ids = {model.id for model in client_for(coder).models.list()}
    assert "model-balanced" in ids
    assert "model-reasoning-opus" not in ids


def test_chat_completion(coder: GatewayUserHandle) -> None:
    response = client_for(coder).chat.completions.create(
        model="model-balanced", messages=[{"role": "user", "content": "Hello, how are you?"}]
    )
    assert response.choices[0].message.content
    assert response.usage is not None and response.usage.total_tokens > 0


def test_streaming_chat_completion(coder: GatewayUserHandle) -> None:
    stream = client_for(coder).chat.completions.create(
        model="model-balanced",
        messages=[{"role": "user", "content": "Write a function to sort an array"}],
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) >= 2
    assert "".join(pieces).strip()


def test_text_completion(coder: GatewayUserHandle) -> None:
    response = client_for(coder).completions.create(model="model-balanced", prompt="Say hi", max_tokens=16)
    assert response.choices[0].text


def test_embeddings(coder: GatewayUserHandle) -> None:
    response = client_for(coder).embeddings.create(model="model-embed", input=["hello", "world"])
    assert len(response.data) == 2
    assert len(response.data[0].embedding) > 0


def test_user_info_shows_budget_and_spend(coder: GatewayUserHandle, gateway_root: str) -> None:
    response = httpx.get(
        gateway_root + "/user/info", headers={"Authorization": f"Bearer {coder.api_key}"}, timeout=10
    )
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert body["user_id"] == coder.email
    info = body["user_info"]
    assert info["max_budget"] == pytest.approx(20.0)
    assert info["rpm_limit"] == 50
    assert "model-balanced" in info["models"]
    assert "spend" in info


def test_self_service_key_info_but_no_team_info(coder: GatewayUserHandle, gateway_root: str) -> None:
    headers = {"Authorization": f"Bearer {coder.api_key}"}
    key_info = httpx.get(gateway_root + "/key/info", headers=headers, timeout=10)
    assert key_info.status_code == 200, key_info.text[:300]
    assert key_info.json()["info"]["max_budget"] == pytest.approx(20.0)
    team_id = key_info.json()["info"]["team_id"]
    team_info = httpx.get(
        gateway_root + "/team/info", params={"team_id": team_id}, headers=headers, timeout=10
    )
    assert team_info.status_code in (401, 403), "a user key must not list its teammates' keys"


def test_bad_key_is_401(gateway_url: str) -> None:
    bad = OpenAI(api_key="sk-not-a-real-key-0000000000000000", base_url=gateway_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as error:
        bad.chat.completions.create(model="model-cheap", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 401


def test_model_outside_tier_is_403(coder: GatewayUserHandle) -> None:
    with pytest.raises(openai.PermissionDeniedError) as error:
        client_for(coder).chat.completions.create(
            model="model-reasoning-opus", messages=[{"role": "user", "content": "hi"}]
        )
    assert error.value.status_code == 403
    assert "model-reasoning-opus" in str(error.value)


def test_rpm_limit_is_429_on_the_excess(make_user: Callable[..., GatewayUserHandle]) -> None:
    drafter = make_user("drafting")  # 10 RPM
    client = client_for(drafter)
    statuses = []
    for _ in range(13):
        try:
            client.chat.completions.create(model="model-cheap", messages=[{"role": "user", "content": "hi"}])
            statuses.append(200)
        except openai.RateLimitError as error:
            statuses.append(error.status_code)
    assert statuses.count(200) == 10, statuses
    assert statuses[10:] == [429, 429, 429], statuses


def test_exhausted_budget_is_402(make_user: Callable[..., GatewayUserHandle]) -> None:
    broke = make_user("drafting", monthlyBudgetUSD=0.00001)
    client = client_for(broke)
    hi = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="model-cheap", messages=hi)
    # LiteLLM books the cost right after answering, so a request racing it may still pass; the
    # overshoot is bounded, and within a few seconds every request is refused.
    refused: openai.APIStatusError | None = None
    passed_after_exhaustion = 0
    deadline = time.monotonic() + 10
    while refused is None and time.monotonic() < deadline:
        try:
            client.chat.completions.create(model="model-cheap", messages=hi)
            passed_after_exhaustion += 1
            time.sleep(0.2)
        except openai.APIStatusError as error:
            refused = error
    assert refused is not None, "the exhausted budget was never enforced"
    assert refused.status_code == 402
    assert "budget" in str(refused).lower()
    assert passed_after_exhaustion <= 2


def test_budget_resets_on_the_first_of_next_month(coder: GatewayUserHandle, gateway_root: str) -> None:
    expected = first_of_next_month_utc(datetime.now(UTC))
    status = coder.refresh()["status"]
    assert parse_time(status["budgetResetAt"]) == expected
    key_info = httpx.get(
        gateway_root + "/key/info", headers={"Authorization": f"Bearer {coder.api_key}"}, timeout=10
    ).json()["info"]
    assert key_info["budget_duration"] == "1mo"
    assert parse_time(key_info["budget_reset_at"]) == expected


def test_spend_grows_and_reaches_the_gatewayuser_status(make_user: Callable[..., GatewayUserHandle]) -> None:
    user = make_user("coding")
    assert float(user.obj["status"].get("spendUSD", 0)) == 0
    client = client_for(user)
    for _ in range(3):
        client.chat.completions.create(model="model-balanced", messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 120
    spend = 0.0
    while time.monotonic() < deadline:
        spend = float(user.refresh()["status"].get("spendUSD", 0) or 0)
        if spend > 0:
            break
        time.sleep(2)
    assert spend > 0, "spend never reached GatewayUser status"
