"""The Bedrock stub driven by boto3's real ``bedrock-runtime`` client, with credentials obtained the IRSA way.

boto3 gets no static keys: only AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ENDPOINT_URL_STS, so it calls
moto's AssumeRoleWithWebIdentity and signs with the temporary ``ASIA…`` key and its session token, which the
stub verifies against what moto issued.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from tests.stack.bedrock import StubAdmin
from tests.stack.bedrock_stub.models import REPLY_WORDS

pytestmark = pytest.mark.stack

HAIKU = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
HAIKU_ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{HAIKU}"
TITAN = "amazon.titan-embed-text-v2:0"
REPLY = " ".join(REPLY_WORDS)
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
STATIC_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


@pytest.fixture(scope="module")
def irsa_session(stack_env: dict[str, str]) -> boto3.Session:
    patch = pytest.MonkeyPatch()
    for name in STATIC_VARIABLES:
        patch.delenv(name, raising=False)
    patch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no profile on the machine may interfere
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    session = boto3.Session()
    session.get_credentials().get_frozen_credentials()  # resolves now, while the env is patched
    patch.undo()
    return session


@pytest.fixture(scope="module")
def client(irsa_session: boto3.Session, stack_env: dict[str, str]) -> Any:
    return irsa_session.client(
        "bedrock-runtime", endpoint_url=stack_env["BEDROCK_STUB_URL"], config=NO_RETRIES
    )


@pytest.fixture
def admin(stack_env: dict[str, str]) -> Iterator[StubAdmin]:
    stub = StubAdmin(stack_env["BEDROCK_STUB_URL"])
    stub.reset()
    yield stub
    stub.reset()


def only_call(admin: StubAdmin) -> dict[str, Any]:
    calls = admin.calls()
    assert len(calls) == 1, calls
    return calls[0]


def test_credentials_are_temporary_ones_from_sts(
    irsa_session: boto3.Session, stack_env: dict[str, str]
) -> None:
    credentials = irsa_session.get_credentials()
    assert credentials.method == "assume-role-with-web-identity"
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA") and frozen.token
    assert stack_env["AWS_ENDPOINT_URL_STS"] == stack_env["STS_URL"]


def test_converse(client: Any, admin: StubAdmin) -> None:
    prompt = "What is the capital of France?"
    response = client.converse(modelId=HAIKU, messages=messages(prompt), inferenceConfig={"maxTokens": 50})
    assert response["output"]["message"] == {"role": "assistant", "content": [{"text": REPLY}]}
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {
        "inputTokens": math.ceil(len(prompt) / 4),
        "outputTokens": len(REPLY_WORDS),
        "totalTokens": math.ceil(len(prompt) / 4) + len(REPLY_WORDS),
    }
    call = only_call(admin)
    assert call["operation"] == "Converse" and call["modelId"] == HAIKU and call["status"] == 200
    assert call["accessKeyId"].startswith("ASIA") and call["sessionToken"] is True
    assert call["signatureVerified"] is True
    assert call["body"]["messages"] == messages(prompt)
    assert call["rawModelId"] == HAIKU.replace(":", "%3A")


def test_converse_max_tokens_truncates(client: Any, admin: StubAdmin) -> None:
    response = client.converse(modelId=HAIKU, messages=messages("hi"), inferenceConfig={"maxTokens": 3})
    assert response["stopReason"] == "max_tokens"
    assert response["usage"]["outputTokens"] == 3
    assert response["output"]["message"]["content"][0]["text"] == " ".join(REPLY_WORDS[:3])


def test_converse_stream_to_the_end(client: Any, admin: StubAdmin) -> None:
    response = client.converse_stream(modelId=HAIKU, messages=messages("Stream please"))
    events = list(response["stream"])
    names = [next(iter(event)) for event in events]
    assert names[0] == "messageStart" and names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert len(deltas) == len(REPLY_WORDS) and "".join(deltas) == REPLY
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 4,
        "outputTokens": len(REPLY_WORDS),
        "totalTokens": 4 + len(REPLY_WORDS),
    }
    assert events[-1]["metadata"]["metrics"]["latencyMs"] >= 1
    assert only_call(admin)["operation"] == "ConverseStream"


def test_deepseek_r1_streams_reasoning_then_text(client: Any, admin: StubAdmin) -> None:
    events = list(client.converse_stream(modelId="us.deepseek.r1-v1:0", messages=messages("hi"))["stream"])
    blocks = {e["contentBlockDelta"]["contentBlockIndex"] for e in events if "contentBlockDelta" in e}
    assert blocks == {0, 1}
    assert (
        "reasoningContent"
        in next(e for e in events if "contentBlockDelta" in e)["contentBlockDelta"]["delta"]
    )


@pytest.mark.parametrize("dimensions", [256, 512, 1024])
def test_invoke_titan_embeddings(client: Any, admin: StubAdmin, dimensions: int) -> None:
    def embed(text: str) -> dict[str, Any]:
        body = json.dumps({"inputText": text, "dimensions": dimensions, "normalize": True})
        return dict(json.loads(client.invoke_model(modelId=TITAN, body=body)["body"].read()))

    first, again, other = embed("hello world"), embed("hello world"), embed("goodbye")
    assert len(first["embedding"]) == dimensions
    assert math.isclose(math.sqrt(sum(v * v for v in first["embedding"])), 1.0, abs_tol=1e-3)
    assert first["embedding"] == again["embedding"] != other["embedding"]
    assert first["inputTextTokenCount"] == 3
    assert admin.calls()[0]["operation"] == "InvokeModel"


def test_titan_refuses_other_dimensions_and_converse(client: Any, admin: StubAdmin) -> None:
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=TITAN, body=json.dumps({"inputText": "x", "dimensions": 100}))
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId=TITAN, messages=messages("hi"))


def test_invoke_anthropic(client: Any, admin: StubAdmin) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    response = client.invoke_model(modelId=HAIKU, body=json.dumps(body))
    payload = json.loads(response["body"].read())
    assert payload["content"] == [{"type": "text", "text": REPLY}]
    assert payload["usage"] == {"input_tokens": 2, "output_tokens": len(REPLY_WORDS)}
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-output-token-count"] == str(len(REPLY_WORDS))


def test_invoke_with_response_stream(client: Any, admin: StubAdmin) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    response = client.invoke_model_with_response_stream(modelId=HAIKU, body=json.dumps(body))
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    assert [c["type"] for c in chunks[:2]] == ["message_start", "content_block_start"]
    assert [c["type"] for c in chunks[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == REPLY
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == len(REPLY_WORDS)
    assert only_call(admin)["operation"] == "InvokeModelWithResponseStream"


def test_arn_model_id_routes(client: Any, admin: StubAdmin) -> None:
    response = client.converse(modelId=HAIKU_ARN, messages=messages("hi"))
    assert response["output"]["message"]["content"][0]["text"] == REPLY
    call = only_call(admin)
    assert call["modelId"] == HAIKU_ARN
    assert "%2F" in call["rawModelId"] and call["signatureVerified"] is True


def test_raw_unencoded_model_id_routes(
    irsa_session: boto3.Session, stack_env: dict[str, str], admin: StubAdmin
) -> None:
    """Some clients send ``:`` and ``/`` of an ARN as they are; the stub must route and verify those too."""
    url = stack_env["BEDROCK_STUB_URL"]
    path = f"/model/{HAIKU_ARN}/converse"
    body = json.dumps({"messages": messages("hi")}).encode()
    request = AWSRequest(
        method="POST", url=url + path, data=body, headers={"Content-Type": "application/json"}
    )
    credentials = irsa_session.get_credentials().get_frozen_credentials()
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    connection.request("POST", path, body=body, headers=dict(request.headers.items()))
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert json.loads(response.read())["output"]["message"]["content"][0]["text"] == REPLY
    call = only_call(admin)
    assert call["rawModelId"] == call["modelId"] == HAIKU_ARN and call["signatureVerified"] is True


def test_unknown_model_is_a_validation_error(client: Any, admin: StubAdmin) -> None:
    with pytest.raises(client.exceptions.ValidationException) as caught:
        client.converse(modelId="anthropic.claude-9-v1:0", messages=messages("hi"))
    assert caught.value.response["Error"]["Message"] == "The provided model identifier is invalid."
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def _client_with(stack_env: dict[str, str], **credentials: Any) -> Any:
    session = botocore.session.Session()
    return session.create_client(
        "bedrock-runtime",
        endpoint_url=stack_env["BEDROCK_STUB_URL"],
        region_name="us-east-1",
        config=NO_RETRIES,
        **credentials,
    )


def test_wrong_secret_is_rejected(
    irsa_session: boto3.Session, stack_env: dict[str, str], admin: StubAdmin
) -> None:
    real = irsa_session.get_credentials().get_frozen_credentials()
    forged = _client_with(
        stack_env,
        aws_access_key_id=real.access_key,
        aws_secret_access_key="not-the-secret",
        aws_session_token=real.token,
    )
    with pytest.raises(ClientError) as caught:
        forged.converse(modelId=HAIKU, messages=messages("hi"))
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    call = only_call(admin)
    assert call["errorCode"] == "InvalidSignatureException" and call["accessKeyId"] == real.access_key


def test_wrong_session_token_or_unknown_key_is_rejected(
    irsa_session: boto3.Session, stack_env: dict[str, str], admin: StubAdmin
) -> None:
    real = irsa_session.get_credentials().get_frozen_credentials()
    for credentials in (
        {
            "aws_access_key_id": real.access_key,
            "aws_secret_access_key": real.secret_key,
            "aws_session_token": "x",
        },
        {"aws_access_key_id": "ASIANEVERISSUED00000", "aws_secret_access_key": "s", "aws_session_token": "t"},
    ):
        with pytest.raises(ClientError) as caught:
            _client_with(stack_env, **credentials).converse(modelId=HAIKU, messages=messages("hi"))
        assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
        assert (
            caught.value.response["Error"]["Message"]
            == "The security token included in the request is invalid."
        )


def test_tampered_request_is_rejected(
    client: Any, irsa_session: boto3.Session, stack_env: dict[str, str], admin: StubAdmin
) -> None:
    tampering = irsa_session.client(
        "bedrock-runtime", endpoint_url=stack_env["BEDROCK_STUB_URL"], config=NO_RETRIES
    )

    def change_body_after_signing(request: Any, **_: Any) -> None:
        request.body = request.body.replace(b"hello", b"HELLO")

    tampering.meta.events.register("before-send.bedrock-runtime.Converse", change_body_after_signing)
    with pytest.raises(ClientError) as caught:
        tampering.converse(modelId=HAIKU, messages=messages("hello"))
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    client.converse(modelId=HAIKU, messages=messages("hello"))  # the same request, untampered, passes


def test_unsigned_request_is_rejected(stack_env: dict[str, str], admin: StubAdmin) -> None:
    unsigned = boto3.client(
        "bedrock-runtime",
        endpoint_url=stack_env["BEDROCK_STUB_URL"],
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as caught:
        unsigned.converse(modelId=HAIKU, messages=messages("hi"))
    assert caught.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"


def test_throttling_knob(client: Any, admin: StubAdmin) -> None:
    admin.fail_next(429, count=2)
    for _ in range(2):
        with pytest.raises(client.exceptions.ThrottlingException) as caught:
            client.converse(modelId=HAIKU, messages=messages("hi"))
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert client.converse(modelId=HAIKU, messages=messages("hi"))["stopReason"] == "end_turn"
    assert [c["status"] for c in admin.calls()] == [429, 429, 200]


@pytest.mark.parametrize(
    ("status", "exception"), [(500, "InternalServerException"), (503, "ServiceUnavailableException")]
)
def test_server_error_knob(client: Any, admin: StubAdmin, status: int, exception: str) -> None:
    admin.fail_next(status)
    with pytest.raises(getattr(client.exceptions, exception)):
        client.converse(modelId=HAIKU, messages=messages("hi"))


def test_mid_stream_failure_knob(client: Any, admin: StubAdmin) -> None:
    admin.fail_next(429, midStream=True, operations=["ConverseStream"])
    stream = iter(client.converse_stream(modelId=HAIKU, messages=messages("hi"))["stream"])
    assert next(stream) == {"messageStart": {"role": "assistant"}}
    with pytest.raises(EventStreamError) as caught:
        next(stream)
    assert caught.value.response["Error"]["Code"] == "throttlingException"


def test_latency_knob(client: Any, admin: StubAdmin) -> None:
    admin.set(latencyMs=300)
    started = time.perf_counter()
    client.converse(modelId=HAIKU, messages=messages("hi"))
    assert time.perf_counter() - started >= 0.3


def test_huge_usage_knob(client: Any, admin: StubAdmin) -> None:
    admin.set(usage={"inputTokens": 10_000_000, "outputTokens": 0}, usageCalls=1)
    assert client.converse(modelId=HAIKU, messages=messages("hi"))["usage"]["inputTokens"] == 10_000_000
    events = list(client.converse_stream(modelId=HAIKU, messages=messages("hi"))["stream"])
    assert events[-1]["metadata"]["usage"]["inputTokens"] == 1  # only one call was inflated


def test_calls_can_be_cleared(client: Any, admin: StubAdmin) -> None:
    client.converse(modelId=HAIKU, messages=messages("hi"))
    assert len(admin.calls()) == 1
    admin.clear_calls()
    assert admin.calls() == []
