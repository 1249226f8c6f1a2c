"""Server-side AWS Signature Version 4 verification for the ``bedrock`` signing service.

Mirrors botocore's ``SigV4Auth`` canonicalisation: the canonical URI is the raw request path quoted once more
(``%3A`` becomes ``%253A``: non-S3 services double-encode), header values are trimmed with inner whitespace
squashed, the payload hash is SHA-256 of the body. Errors use Bedrock's codes and messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "bedrock"
MAX_SKEW = dt.timedelta(minutes=15)
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."


class AuthError(Exception):
    """A request Bedrock would refuse; ``code`` is the x-amzn-ErrorType, the status is 403 unless said."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Secret:
    secret_access_key: str
    session_token: str | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    method: str,
    raw_path: str,
    query_string: str,
    headers: Iterable[tuple[str, str]],
    signed_headers: list[str],
    body: bytes,
) -> str:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value)
    lines = []
    for name in signed_headers:
        joined = ",".join(v.strip() for v in sorted(values.get(name, [])))
        lines.append(f"{name}:{' '.join(joined.split())}")
    return "\n".join(
        [
            method.upper(),
            quote(raw_path or "/", safe="/~"),
            canonical_query(query_string),
            "\n".join(lines) + "\n",
            ";".join(signed_headers),
            _sha256(body),
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, _sha256(canonical.encode("utf-8"))])


def _parse_amz_date(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise AuthError(
            "IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{value}'.", 400
        ) from None


@dataclass(frozen=True)
class SignedRequest:
    """What the Authorization header claims, after the shape, scope and freshness checks passed."""

    access_key_id: str
    scope: str
    amz_date: str
    signed_headers: list[str]
    signature: str
    session_token: str | None

    @property
    def region(self) -> str:
        return self.scope.split("/")[1]


def inspect(headers: list[tuple[str, str]], region: str, now: dt.datetime | None = None) -> SignedRequest:
    """Check the shape, credential scope (service ``bedrock``, our region) and x-amz-date freshness."""
    header_map = {name.lower(): value for name, value in headers}
    authorization = header_map.get("authorization")
    if not authorization:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH_RE.match(authorization.strip())
    if not match:
        raise AuthError(
            "IncompleteSignatureException",
            f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters for "
            f"{ALGORITHM}. Authorization={authorization.split(' ')[0]}",
            400,
        )
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AuthError(
            "IncompleteSignatureException",
            "Credential should be scoped with a valid terminator: 'aws4_request'.",
            400,
        )
    access_key_id, scope_date, scope_region, scope_service, _ = parts
    if scope_service != SERVICE:
        raise AuthError(
            "InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'. "
        )
    if scope_region != region:
        raise AuthError("InvalidSignatureException", "Credential should be scoped to a valid region. ")
    amz_date = header_map.get("x-amz-date")
    if not amz_date:
        raise AuthError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            400,
        )
    signed_at = _parse_amz_date(amz_date)
    if scope_date != amz_date[:8]:
        raise AuthError(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
            f"HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'.",
        )
    current = now or dt.datetime.now(dt.UTC)
    stamp = current.strftime("%Y%m%dT%H%M%SZ")
    if signed_at < current - MAX_SKEW:
        limit = (current - MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
        raise AuthError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {limit} ({stamp} - 15 min.)",
        )
    if signed_at > current + MAX_SKEW:
        limit = (current + MAX_SKEW).strftime("%Y%m%dT%H%M%SZ")
        raise AuthError(
            "InvalidSignatureException",
            f"Signature not yet current: {amz_date} is still later than {limit} ({stamp} + 15 min.)",
        )
    signed_headers = match["signed"].split(";")
    if signed_headers != sorted(signed_headers) or "host" not in signed_headers:
        raise AuthError("InvalidSignatureException", "SignedHeaders must be sorted and include 'host'.")
    missing = [name for name in signed_headers if name not in header_map]
    if missing:
        raise AuthError("InvalidSignatureException", f"Signed header(s) missing from the request: {missing}.")
    token = header_map.get("x-amz-security-token")
    if token is not None and "x-amz-security-token" not in signed_headers:
        raise AuthError("InvalidSignatureException", "'x-amz-security-token' must be a signed header.")
    if access_key_id.startswith("ASIA") and not token:
        # Temporary credentials are useless without their session token.
        raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
    return SignedRequest(
        access_key_id, "/".join(parts[1:]), amz_date, signed_headers, match["signature"], token
    )


def check_signature(
    signed: SignedRequest,
    secret: Secret | None,
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    """Recompute the signature with the secret issued for the access key id; ``None``: key unknown."""
    if secret is None:
        raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
    if secret.session_token is not None and not hmac.compare_digest(
        signed.session_token or "", secret.session_token
    ):
        raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
    canonical = canonical_request(method, raw_path, query_string, headers, signed.signed_headers, body)
    date, region, service, _ = signed.scope.split("/")
    key = signing_key(secret.secret_access_key, date, region, service)
    to_sign = string_to_sign(signed.amz_date, signed.scope, canonical).encode("utf-8")
    expected = hmac.new(key, to_sign, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signed.signature):
        raise AuthError("InvalidSignatureException", SIGNATURE_MISMATCH)
