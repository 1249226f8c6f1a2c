"""The stub's own latency: ``python -m tests.stack.bedrock_stub.latency [-n 200]`` (stack env loaded).

Two views of N sequential Converse calls (after a warm-up): through boto3's ``bedrock-runtime`` client, and as
raw HTTP on one keep-alive connection with each request signed (SigV4, IRSA credentials) before the clock
starts, which is the floor a gateway benchmark compares against.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import time
from urllib.parse import quote, urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Say hello in one short sentence."}]}]


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90, p99 = ms[int(len(ms) * 0.9)], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<27} n={len(ms)} median {statistics.median(ms):.2f} ms  p90 {p90:.2f} ms  p99 {p99:.2f} ms"


def via_boto3(url: str, n: int) -> list[float]:
    client = boto3.Session().client("bedrock-runtime", endpoint_url=url)
    samples = []
    for i in range(n + 10):
        started = time.perf_counter()
        client.converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 50})
        if i >= 10:
            samples.append(time.perf_counter() - started)
    return samples


def via_raw_http(url: str, n: int) -> list[float]:
    session = boto3.Session()
    credentials = session.get_credentials().get_frozen_credentials()
    region = session.region_name or "us-east-1"
    parts = urlsplit(url)
    path = f"/model/{quote(MODEL, safe='')}/converse"
    body = json.dumps({"messages": MESSAGES, "inferenceConfig": {"maxTokens": 50}}).encode()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    samples = []
    for i in range(n + 10):
        request = AWSRequest(
            method="POST", url=f"{url}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
        headers = dict(request.headers.items())
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"stub answered {response.status}")
        if i >= 10:
            samples.append(elapsed)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--url", default=os.environ.get("BEDROCK_STUB_URL"))
    args = parser.parse_args()
    if not args.url:
        raise SystemExit("set BEDROCK_STUB_URL (source .stack/env) or pass --url")
    print(summary("boto3 converse", via_boto3(args.url, args.n)))
    print(summary("raw HTTP converse (signed)", via_raw_http(args.url, args.n)))


if __name__ == "__main__":
    main()
