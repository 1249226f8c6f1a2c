"""The real, pinned LiteLLM proxy of the local stack, with its database (our Postgres, reached through the
offline WebAssembly Prisma engine): the admin API the operator relies on, the public health probes, and,
through the Bedrock stub, spend tracking and enforcement with virtual keys.

Key values never appear in assertions' output: they are compared as booleans or by their SHA-256 hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from tests.stack.bedrock import StubAdmin
from tests.stack.litellm import VENV, engine_env

pytestmark = pytest.mark.stack

HAIKU = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


def new_key() -> str:
    return "sk-" + secrets.token_hex(24)


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    error = body.get("error", body.get("detail", body))
    return error if isinstance(error, dict) else {"message": str(error)}


@pytest.fixture(scope="module")
def admin(stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack_env['LITELLM_MASTER_KEY']}"}
    with httpx.Client(base_url=stack_env["LITELLM_ADMIN_URL"], headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def public(stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack_env["LITELLM_ADMIN_URL"], timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def db(stack_env: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack_env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"team": f"itest-team-{suffix}", "user": f"itest-user-{suffix}", "alias": f"itest.key.{suffix}"}


@pytest.fixture
def cleanup(admin: httpx.Client) -> Iterator[dict[str, list[str]]]:
    made: dict[str, list[str]] = {"teams": [], "users": [], "aliases": []}
    yield made
    if made["aliases"]:
        admin.post("/key/delete", json={"key_aliases": made["aliases"]})
    if made["users"]:
        admin.post("/user/delete", json={"user_ids": made["users"]})
    if made["teams"]:
        admin.post("/team/delete", json={"team_ids": made["teams"]})


Made = dict[str, list[str]]


def make_team(admin: httpx.Client, cleanup: Made, team_id: str, **extra: Any) -> dict[str, Any]:
    response = admin.post(
        "/team/new",
        json={"team_id": team_id, "team_alias": f"alias of {team_id}", "models": ["model-cheap"], **extra},
    )
    assert response.status_code == 200, response.text
    cleanup["teams"].append(team_id)
    return dict(response.json())


def make_user(admin: httpx.Client, cleanup: Made, user_id: str, **extra: Any) -> dict[str, Any]:
    response = admin.post("/user/new", json={"user_id": user_id, "auto_create_key": False, **extra})
    assert response.status_code == 200, response.text
    cleanup["users"].append(user_id)
    return dict(response.json())


def make_key(admin: httpx.Client, cleanup: Made, alias: str, **extra: Any) -> str:
    key = new_key()
    response = admin.post(
        "/key/generate", json={"key": key, "key_alias": alias, "models": ["model-cheap"], **extra}
    )
    assert response.status_code == 200, response.text
    cleanup["aliases"].append(alias)
    returned_ours = response.json()["key"] == key
    assert returned_ours, "key/generate did not keep the caller-chosen key"
    return key


# ----------------------------------------------------------------------------------------------------
# Health


def test_probes_answer_without_auth(public: httpx.Client) -> None:
    live = public.get("/health/liveliness")
    assert live.status_code == 200
    ready = public.get("/health/readiness")
    assert ready.status_code == 200
    assert ready.json()["db"] == "connected"


def test_public_health_needs_no_key_and_calls_no_model(
    public: httpx.Client, stack_env: dict[str, str]
) -> None:
    stub = StubAdmin(stack_env["BEDROCK_STUB_URL"]) if "BEDROCK_STUB_URL" in stack_env else None
    calls_before = len(stub.calls()) if stub else 0
    response = public.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "healthy", "db": "connected"}
    assert public.head("/health").status_code == 200
    if stub:
        assert len(stub.calls()) == calls_before, "/health must not call any model"


# ----------------------------------------------------------------------------------------------------
# Admin API with the database


def test_team_user_and_key_lifecycle(
    admin: httpx.Client, db: psycopg.Connection[Any], names: dict[str, str], cleanup: dict[str, list[str]]
) -> None:
    team = make_team(
        admin, cleanup, names["team"], max_budget=100, budget_duration="1mo", metadata={"tier": "standard"}
    )
    assert team["team_id"] == names["team"]
    assert team["models"] == ["model-cheap"]
    again = admin.post("/team/new", json={"team_id": names["team"]})
    assert again.status_code == 400
    assert "already exists" in str(error_of(again))

    user = make_user(admin, cleanup, names["user"], max_budget=5, budget_duration="1mo")
    assert user["user_id"] == names["user"]
    created_a_key = bool(user.get("key"))
    assert not created_a_key, "auto_create_key=false must not create a key"
    with db.cursor() as cur:
        cur.execute('SELECT count(*) FROM "LiteLLM_VerificationToken" WHERE user_id = %s', (names["user"],))
        assert cur.fetchone() == (0,)

    metadata = {"managedBy": "llm-gateway-operator", "nested": {"list": [1, 2], "flag": True}}
    key = make_key(
        admin,
        cleanup,
        names["alias"],
        user_id=names["user"],
        team_id=names["team"],
        max_budget=1.5,
        budget_duration="1mo",
        rpm_limit=60,
        metadata=metadata,
    )
    token = sha256(key)

    duplicate = admin.post("/key/generate", json={"key": new_key(), "key_alias": names["alias"]})
    assert duplicate.status_code == 400
    assert "already exists" in error_of(duplicate)["message"]
    assert error_of(duplicate)["param"] == "key_alias"

    listed = admin.get("/key/list", params={"key_alias": names["alias"], "return_full_object": "true"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total_count"] == 1
    row = body["keys"][0]
    assert row["token"] == token
    assert row["key_alias"] == names["alias"]
    assert (row["user_id"], row["team_id"]) == (names["user"], names["team"])
    assert row["max_budget"] == 1.5 and row["rpm_limit"] == 60
    assert row["metadata"] == metadata

    # Stored as real JSON, with a calendar-month reset: the engine's typed values reached Postgres intact.
    with db.cursor() as cur:
        cur.execute(
            "SELECT jsonb_typeof(metadata), metadata #> '{nested,list}', budget_reset_at, models "
            'FROM "LiteLLM_VerificationToken" WHERE token = %s',
            (token,),
        )
        kind, nested_list, reset_at, models = cur.fetchone()  # type: ignore[misc]
    assert kind == "object" and nested_list == [1, 2]
    assert models == ["model-cheap"]
    assert reset_at is not None and reset_at.day == 1
    assert reset_at > datetime.now(UTC).replace(tzinfo=None)

    updated = admin.post("/key/update", json={"key": key, "max_budget": 2.5, "metadata": {"replaced": True}})
    assert updated.status_code == 200, updated.text
    info = admin.get("/key/info", params={"key": key})
    assert info.status_code == 200
    assert info.json()["info"]["max_budget"] == 2.5
    assert info.json()["info"]["metadata"] == {"replaced": True}

    deleted = admin.post("/key/delete", json={"key_aliases": [names["alias"]]})
    assert deleted.status_code == 200, deleted.text
    cleanup["aliases"].remove(names["alias"])
    after = admin.get("/key/list", params={"key_alias": names["alias"], "return_full_object": "true"})
    assert after.json()["total_count"] == 0
    with db.cursor() as cur:
        cur.execute('SELECT count(*) FROM "LiteLLM_VerificationToken" WHERE token = %s', (token,))
        assert cur.fetchone() == (0,)
        cur.execute('SELECT count(*) FROM "LiteLLM_DeletedVerificationToken" WHERE token = %s', (token,))
        assert cur.fetchone() == (1,)
    assert admin.post("/key/delete", json={"key_aliases": [names["alias"]]}).status_code == 404


def test_virtual_key_is_checked_against_the_database(
    admin: httpx.Client, public: httpx.Client, names: dict[str, str], cleanup: dict[str, list[str]]
) -> None:
    make_user(admin, cleanup, names["user"])
    key = make_key(admin, cleanup, names["alias"], user_id=names["user"])
    models = public.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200, models.text
    assert [m["id"] for m in models.json()["data"]] == ["model-cheap"]
    unknown = public.get("/v1/models", headers={"Authorization": f"Bearer {new_key()}"})
    assert unknown.status_code == 401
    user_info = public.get("/user/info", headers={"Authorization": f"Bearer {key}"})
    assert user_info.status_code == 200, user_info.text
    assert user_info.json()["user_id"] == names["user"]


# ----------------------------------------------------------------------------------------------------
# The offline engine under prisma-client-python, LiteLLM's DB layer, beyond what the admin API touches

ENGINE_PROBE = r"""
import asyncio, datetime, json, os, uuid
from prisma import Json, Prisma

async def main():
    db = Prisma(datasource={"url": os.environ["DATABASE_URL"]})
    await db.connect()
    out = {}
    bid = "itest-budget-" + uuid.uuid4().hex[:8]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    budgets = db.litellm_budgettable
    common = {"created_by": "itest", "updated_by": "itest"}
    made = await budgets.create(data={"budget_id": bid, "max_budget": 1.5, "rpm_limit": 10,
        "model_max_budget": Json({"m": {"x": [1, 2]}}), "budget_reset_at": now, "allowed_models": ["a", "b"],
        **common})
    out["create"] = [made.rpm_limit, made.model_max_budget, made.allowed_models, made.budget_reset_at == now]
    changed = await budgets.update(where={"budget_id": bid}, data={"rpm_limit": {"increment": 5},
        "allowed_models": {"set": ["c"]}, "budget_reset_at": now + datetime.timedelta(days=1)})
    out["update"] = [changed.rpm_limit, changed.allowed_models]
    out["datetime_filter"] = await budgets.count(where={"budget_id": bid,
        "budget_reset_at": {"gt": now + datetime.timedelta(hours=23)}})
    out["upsert"] = (await budgets.upsert(where={"budget_id": bid},
        data={"create": {"budget_id": bid, **common}, "update": {"max_budget": 9.0}})).max_budget
    out["create_many"] = await budgets.create_many(data=[
        {"budget_id": bid + "-1", "model_max_budget": Json({"k": [1]}), **common},
        {"budget_id": bid + "-2", **common}, {"budget_id": bid, **common}], skip_duplicates=True)
    out["json_equals"] = await budgets.count(where={"budget_id": {"startswith": bid},
        "model_max_budget": {"equals": Json({"k": [1]})}})
    out["json_path"] = await budgets.count(where={"budget_id": {"startswith": bid},
        "model_max_budget": {"path": ["m", "x"], "equals": Json([1, 2])}})
    token = "itest" + uuid.uuid4().hex
    await db.litellm_verificationtoken.create(data={"token": token, "spend": 0.25,
        "metadata": Json({"via": "nested connect"}), "litellm_budget_table": {"connect": {"budget_id": bid}}})
    found = await budgets.find_unique(where={"budget_id": bid},
        include={"keys": {"where": {"spend": {"gt": 0.1}}, "take": 5}})
    out["include"] = [(k.token == token, k.metadata) for k in found.keys]
    grouped = await budgets.group_by(by=["created_by"], where={"budget_id": {"startswith": bid}},
        count={"_all": True}, sum={"max_budget": True})
    out["group_by"] = [(g["_count"]["_all"], g["_sum"]["max_budget"]) for g in grouped]
    out["query_raw"] = await db.query_raw(
        "SELECT $1::text AS t, 42::bigint AS b, '1 day'::interval AS iv, 'abc'::name AS n, "
        "ARRAY['x'::name, 'y'::name] AS na, 'pg_class'::regclass AS rc, '{\"a\": 1}'::jsonb AS j", "hi")
    out["execute_raw"] = await db.execute_raw(
        'UPDATE "LiteLLM_BudgetTable" SET soft_budget = $1 WHERE budget_id = $2', 0.5, bid)
    async with db.tx() as tx:
        await tx.litellm_budgettable.update(where={"budget_id": bid}, data={"max_budget": 3.0})
    try:
        async with db.tx() as tx:
            await tx.litellm_budgettable.update(where={"budget_id": bid}, data={"max_budget": 4.0})
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    out["after_transactions"] = (await budgets.find_unique(where={"budget_id": bid})).max_budget
    async with db.batch_() as batch:
        batch.litellm_budgettable.update(where={"budget_id": bid}, data={"max_budget": 5.0})
        batch.litellm_budgettable.delete_many(where={"budget_id": {"in": [bid + "-1", bid + "-2"]}})
    out["after_batch"] = await budgets.count(where={"budget_id": {"startswith": bid}, "max_budget": 5.0})
    for name, call in [("duplicate", budgets.create(data={"budget_id": bid, **common})),
                       ("missing", budgets.find_unique_or_raise(where={"budget_id": bid + "-none"}))]:
        try:
            await call
        except Exception as error:
            out[name] = type(error).__name__
    await db.litellm_verificationtoken.delete(where={"token": token})
    out["deleted"] = await budgets.delete_many(where={"budget_id": {"startswith": bid}})
    await db.disconnect()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_offline_engine_serves_prisma_client_python(stack_env: dict[str, str]) -> None:
    env = {**os.environ, **engine_env(), "DATABASE_URL": stack_env["DATABASE_URL"]}
    result = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", ENGINE_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["create"] == [10, {"m": {"x": [1, 2]}}, ["a", "b"], True]
    assert out["update"] == [15, ["c"]]
    assert out["datetime_filter"] == 1
    assert out["upsert"] == 9.0
    assert out["create_many"] == 2
    assert (out["json_equals"], out["json_path"]) == (1, 1)
    assert out["include"] == [[True, {"via": "nested connect"}]]
    assert out["group_by"] == [[3, 9.0]]
    assert out["query_raw"] == [
        {"t": "hi", "b": 42, "iv": "1 day", "n": "abc", "na": ["x", "y"], "rc": "pg_class", "j": {"a": 1}}
    ]
    assert out["execute_raw"] == 1
    assert out["after_transactions"] == 3.0
    assert out["after_batch"] == 1
    assert (out["duplicate"], out["missing"]) == ("UniqueViolationError", "RecordNotFoundError")
    assert out["deleted"] == 1


# ----------------------------------------------------------------------------------------------------
# Through the Bedrock stub: spend and enforcement


@pytest.fixture
def stub(stack_env: dict[str, str]) -> StubAdmin:
    if "BEDROCK_STUB_URL" not in stack_env:
        pytest.skip("the stack was started without its bedrock component (--skip bedrock)")
    admin = StubAdmin(stack_env["BEDROCK_STUB_URL"])
    admin.reset()
    return admin


def chat(public: httpx.Client, key: str, text: str = "hello") -> httpx.Response:
    return public.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "model-cheap", "messages": [{"role": "user", "content": text}], "max_tokens": 20},
    )


def test_chat_with_a_virtual_key_adds_spend_in_the_database(
    admin: httpx.Client,
    public: httpx.Client,
    db: psycopg.Connection[Any],
    stub: StubAdmin,
    names: dict[str, str],
    cleanup: dict[str, list[str]],
) -> None:
    make_user(admin, cleanup, names["user"], max_budget=10)
    key = make_key(admin, cleanup, names["alias"], user_id=names["user"], max_budget=10)
    response = chat(public, key)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert response.json()["usage"]["total_tokens"] > 0
    converse = [c for c in stub.calls() if c["operation"] == "Converse"]
    assert len(converse) == 1, "the request did not reach the Bedrock stub exactly once"
    assert converse[0]["modelId"] == HAIKU
    # IRSA: temporary credentials from STS, no static key.
    assert converse[0]["accessKeyId"].startswith("ASIA") and converse[0]["signatureVerified"] is True

    token = sha256(key)
    deadline = time.monotonic() + 60
    spend = 0.0
    while time.monotonic() < deadline:
        with db.cursor() as cur:
            cur.execute('SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = %s', (token,))
            spend = float(cur.fetchone()[0])  # type: ignore[index]
        if spend > 0:
            break
        time.sleep(1)
    assert spend > 0, "the key's spend never reached the database"
    info = admin.get("/key/info", params={"key": key}).json()["info"]
    assert info["spend"] == pytest.approx(spend)
    user = admin.get("/user/info", params={"user_id": names["user"]}).json()["user_info"]
    assert user["spend"] > 0


def test_exhausted_budget_answers_402(
    admin: httpx.Client,
    public: httpx.Client,
    stub: StubAdmin,
    names: dict[str, str],
    cleanup: dict[str, list[str]],
) -> None:
    make_user(admin, cleanup, names["user"])
    key = make_key(admin, cleanup, names["alias"], user_id=names["user"], max_budget=0.0000001)
    assert chat(public, key).status_code == 200
    statuses = [chat(public, key).status_code for _ in range(3)]
    assert 402 in statuses, statuses
    refused = chat(public, key)
    assert refused.status_code == 402
    assert error_of(refused)["type"] == "budget_exceeded"
    assert "Budget has been exceeded" in error_of(refused)["message"]


def test_rpm_limit_answers_429_on_the_excess(
    admin: httpx.Client,
    public: httpx.Client,
    stub: StubAdmin,
    names: dict[str, str],
    cleanup: dict[str, list[str]],
) -> None:
    make_user(admin, cleanup, names["user"])
    key = make_key(admin, cleanup, names["alias"], user_id=names["user"], rpm_limit=3)
    statuses = [chat(public, key, f"call {i}").status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    reached = sum(1 for c in stub.calls() if c["operation"] == "Converse")
    assert reached == 3, "refused calls must not reach Bedrock"
