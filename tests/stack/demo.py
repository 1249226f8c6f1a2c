"""`make demo`: the product's main job on the local stack, narrated for a newcomer.

An admin applies the standard tiers and three users with kubectl; the operator turns them into LiteLLM
teams, users and keys and delivers each key in a Secret; a developer reads the key and uses the official
OpenAI SDK; the gateway enforces the tier (403 model, 429 rate, 402 budget, 401 bad key).
"""

from __future__ import annotations

import sys
import time

import httpx
import openai
from openai import OpenAI

from tests.stack import kubectl as k
from tests.stack.common import REPO_ROOT, read_env

NAMESPACE = "demo"
USERS = {"alice": "architect", "bob": "coding", "charlie": "drafting"}


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(line: str) -> None:
    print(f"   {line}", flush=True)


def masked(key: str) -> str:
    return f"sk-…{key[-4:]} ({len(key)} chars)"


def apply_and_wait() -> dict[str, tuple[str, str]]:
    if k.get_json("namespace", NAMESPACE):
        # A re-run on a kept stack starts from fresh keys (the finalizer revokes the old ones).
        k.kubectl("delete", "gatewayusers", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=60s")
    step("Admin: kubectl apply -f manifests/tiers.yaml -f manifests/users/")
    print(k.kubectl("apply", "-f", str(REPO_ROOT / "manifests" / "tiers.yaml")), end="")
    print(k.kubectl("apply", "-f", str(REPO_ROOT / "manifests" / "users")), end="")
    for tier in set(USERS.values()):
        k.wait_ready("gatewaytier", tier, timeout=60)
    keys = {}
    started = time.monotonic()
    for name in USERS:
        user = k.wait_ready("gatewayuser", name, NAMESPACE, timeout=60)
        keys[name] = k.user_key(user)
        show(f"{name}: Secret {NAMESPACE}/{user['status']['secretName']} ready")
    show(f"all three keys delivered {time.monotonic() - started:.1f}s after apply")
    print(k.kubectl("get", "gatewaytiers"), end="")
    return keys


def developer_calls(api_key: str, base_url: str) -> None:
    step("Developer (alice, architect): read the key from the Secret")
    show("kubectl get secret alice-llm-key -n demo -o jsonpath='{.data.api-key}' | base64 -d")
    show(f"key {masked(api_key)}, base URL {base_url}")
    client = OpenAI(api_key=api_key, base_url=base_url, max_retries=0)

    step("Chat completion through the OpenAI SDK (model-reasoning -> DeepSeek R1 on Bedrock)")
    reply = client.chat.completions.create(
        model="model-reasoning", messages=[{"role": "user", "content": "Explain quantum computing"}]
    )
    show(f"reply: {reply.choices[0].message.content!r}")
    show(f"usage: {reply.usage.total_tokens if reply.usage else '?'} tokens")

    step("Streamed completion (model-reasoning-opus -> Claude Opus 4)")
    stream = client.chat.completions.create(
        model="model-reasoning-opus", messages=[{"role": "user", "content": "Write a haiku"}], stream=True
    )
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    show(f"{len(chunks)} chunks: {''.join(chunks)!r}")

    step("Embedding (model-embed -> Titan Text Embeddings v2)")
    embedding = client.embeddings.create(model="model-embed", input="hello")
    show(f"vector of {len(embedding.data[0].embedding)} dimensions")


def error_message(error: openai.APIStatusError) -> str:
    body = error.body
    return str(body.get("message", error) if isinstance(body, dict) else error)[:140]


def expect_error(title: str, call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except openai.APIStatusError as error:
        show(f"{title}: HTTP {error.status_code}: {error_message(error)}")
        return
    show(f"{title}: UNEXPECTED SUCCESS")
    raise SystemExit(1)


def guard_rails(keys: dict[str, tuple[str, str]], env: dict[str, str]) -> None:
    alice = OpenAI(api_key=keys["alice"][0], base_url=keys["alice"][1], max_retries=0)
    charlie = OpenAI(api_key=keys["charlie"][0], base_url=keys["charlie"][1], max_retries=0)
    bob = OpenAI(api_key=keys["bob"][0], base_url=keys["bob"][1], max_retries=0)
    hi = [{"role": "user", "content": "hi"}]

    step("Guard rail: a model outside the tier (alice asks for model-cheap)")
    expect_error("403", lambda: alice.chat.completions.create(model="model-cheap", messages=hi))

    step("Guard rail: rate limit (charlie, drafting, 10 requests per minute; 12 sent)")
    codes = []
    for _ in range(12):
        try:
            charlie.chat.completions.create(model="model-cheap", messages=hi)
            codes.append(200)
        except openai.RateLimitError as error:
            codes.append(error.status_code)
    show(f"status codes: {codes}")

    step("Guard rail: budget (bob, coding, $20/month; one very expensive answer, then 402)")
    stub = env.get("BEDROCK_STUB_URL")
    if stub:
        # The stub reports 10M input tokens once: about $30 on model-balanced, over bob's $20.
        httpx.post(
            f"{stub}/_stub/knobs",
            json={"usage": {"inputTokens": 10_000_000, "outputTokens": 0}, "usageCalls": 1},
            timeout=5,
        ).raise_for_status()
    bob.chat.completions.create(model="model-balanced", messages=hi)
    # LiteLLM books a call's cost just after answering it, so a request sent in the same instant may
    # still pass: the overshoot is bounded by the requests already in flight.
    for _ in range(20):
        try:
            bob.chat.completions.create(model="model-balanced", messages=hi)
        except openai.APIStatusError as error:
            show(f"402: HTTP {error.status_code}: {error_message(error)}")
            break
        time.sleep(0.25)
    else:
        show("402: UNEXPECTED: the budget was never enforced")
        raise SystemExit(1)

    step("Guard rail: a bad key")
    bad = OpenAI(api_key="sk-this-key-does-not-exist-000000", base_url=keys["alice"][1], max_retries=0)
    expect_error("401", lambda: bad.chat.completions.create(model="model-cheap", messages=hi))


def spend_table() -> None:
    step("Admin: kubectl get gatewayusers -n demo (spend flows back from LiteLLM)")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        users = [k.get_json("gatewayuser", name, NAMESPACE) or {} for name in USERS]
        if all(float(u.get("status", {}).get("spendUSD", 0) or 0) > 0 for u in users):
            break
        time.sleep(2)
    print(k.kubectl("get", "gatewayusers", "-n", NAMESPACE), end="")


def main() -> int:
    env = read_env()
    if not env:
        print("the stack is not up: run `make stack-up` (or `make demo`)", file=sys.stderr)
        return 1
    import os

    os.environ.update(env)
    keys = apply_and_wait()
    developer_calls(*keys["alice"])
    guard_rails(keys, env)
    spend_table()
    step("Done. `make demo` stops the stack now; `make stack-up` keeps one running for you.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
