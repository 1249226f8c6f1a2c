"""IRSA, simulated: moto's STS in server mode plus a projected-token file, the way EKS sets up a pod.

On EKS the pod gets ``AWS_ROLE_ARN`` and ``AWS_WEB_IDENTITY_TOKEN_FILE`` (a service-account JWT); botocore
trades the token for temporary credentials (``ASIA…`` + session token) with AssumeRoleWithWebIdentity. Here
``AWS_ENDPOINT_URL_STS`` points botocore at moto, which issues such credentials (it does not validate the
token's signature, so a JWT-shaped token is enough) and keeps them, so the Bedrock stub can verify signatures.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request

from tests.stack.common import StackContext, free_port, python_executable, say

ACCOUNT_ID = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/llm-gateway-litellm"
REGION = "us-east-1"
SERVICE_ACCOUNT = "system:serviceaccount:llm-gateway:llm-gateway-litellm"
ISSUER = "https://oidc.eks.us-east-1.amazonaws.com/id/LOCALSTACKSTUB0000000000000000000"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def web_identity_token(now: float | None = None) -> str:
    """A JWT-shaped service-account token (unsigned: moto does not check the signature)."""
    issued = int(now if now is not None else time.time())
    header = {"alg": "RS256", "kid": "local-stack", "typ": "JWT"}
    claims = {
        "aud": ["sts.amazonaws.com"],
        "iss": ISSUER,
        "sub": SERVICE_ACCOUNT,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 86400,
    }
    parts = [
        _b64url(json.dumps(header).encode()),
        _b64url(json.dumps(claims).encode()),
        _b64url(b"not-signed"),
    ]
    return ".".join(parts)


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2) as response:
        return bool(response.status == 200)


def start(ctx: StackContext) -> dict[str, str]:
    state = ctx.state_dir("sts")
    token_file = state / "token"
    token_file.write_text(web_identity_token())
    token_file.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # moto must not pick up real credentials or config from the caller's environment.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    process = ctx.spawn(
        "sts", [python_executable(), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env
    )
    ctx.wait_until("sts", lambda: _ready(url), timeout=60, process=process)
    say(f"sts: moto STS on {url}, role {ROLE_ARN}")
    return {
        "AWS_ENDPOINT_URL_STS": url,
        "STS_URL": url,
        "AWS_ROLE_ARN": ROLE_ARN,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
