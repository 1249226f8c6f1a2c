"""The stub's SigV4 verifier against requests signed by botocore's own SigV4Auth (no network)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.stack.bedrock_stub import sigv4

URL = "http://127.0.0.1:8090/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x-v1%3A0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
KEY, SECRET, TOKEN = "ASIAEXAMPLE000000001", "s3cr3t", "session-token"


def signed(
    service: str = "bedrock", region: str = "us-east-1", token: str | None = TOKEN, key: str = KEY
) -> tuple[str, list[tuple[str, str]]]:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key, SECRET, token), service, region).add_auth(request)
    parts = urlsplit(request.url)
    headers = [("Host", parts.netloc), *request.headers.items()]
    return parts.path, headers


def verify(
    path: str,
    headers: list[tuple[str, str]],
    secret: sigv4.Secret | None,
    body: bytes = BODY,
    now: dt.datetime | None = None,
) -> sigv4.SignedRequest:
    request = sigv4.inspect(headers, "us-east-1", now=now)
    sigv4.check_signature(
        request, secret, method="POST", raw_path=path, query_string="", headers=headers, body=body
    )
    return request


def test_botocore_signature_verifies() -> None:
    path, headers = signed()
    request = verify(path, headers, sigv4.Secret(SECRET, TOKEN))
    assert (request.access_key_id, request.session_token, request.region) == (KEY, TOKEN, "us-east-1")


@pytest.mark.parametrize(
    ("secret", "body", "code"),
    [
        (sigv4.Secret("wrong", TOKEN), BODY, "InvalidSignatureException"),
        (sigv4.Secret(SECRET, TOKEN), BODY.replace(b"hi", b"ho"), "InvalidSignatureException"),
        (sigv4.Secret(SECRET, "other-token"), BODY, "UnrecognizedClientException"),
        (None, BODY, "UnrecognizedClientException"),
    ],
    ids=["wrong-secret", "tampered-body", "wrong-token", "unknown-key"],
)
def test_bad_requests_are_refused(secret: sigv4.Secret | None, body: bytes, code: str) -> None:
    path, headers = signed()
    with pytest.raises(sigv4.AuthError) as caught:
        verify(path, headers, secret, body=body)
    assert (caught.value.status, caught.value.code) == (403, code)


def test_path_must_match_what_was_signed() -> None:
    path, headers = signed()
    with pytest.raises(sigv4.AuthError, match="signature we calculated"):
        verify(path.replace("converse", "invoke"), headers, sigv4.Secret(SECRET, TOKEN))


def test_scope_must_be_bedrock_in_our_region() -> None:
    for kwargs, message in [
        ({"service": "bedrock-runtime"}, "correct service"),
        ({"region": "eu-west-1"}, "valid region"),
    ]:
        _path, headers = signed(**kwargs)
        with pytest.raises(sigv4.AuthError, match=message):
            sigv4.inspect(headers, "us-east-1")


def test_stale_or_future_dates_are_refused() -> None:
    _, headers = signed()
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(sigv4.AuthError, match="Signature expired"):
        sigv4.inspect(headers, "us-east-1", now=now + dt.timedelta(minutes=16))
    with pytest.raises(sigv4.AuthError, match="not yet current"):
        sigv4.inspect(headers, "us-east-1", now=now - dt.timedelta(minutes=16))
    sigv4.inspect(headers, "us-east-1", now=now + dt.timedelta(minutes=14))


def test_temporary_key_without_session_token_is_refused() -> None:
    _, headers = signed(token=None)
    with pytest.raises(sigv4.AuthError) as caught:
        sigv4.inspect(headers, "us-east-1")
    assert caught.value.code == "UnrecognizedClientException"


def test_missing_authorization() -> None:
    with pytest.raises(sigv4.AuthError) as caught:
        sigv4.inspect([("Host", "x")], "us-east-1")
    assert (caught.value.status, caught.value.code) == (403, "MissingAuthenticationTokenException")
