"""Run the Bedrock stub: ``python -m tests.stack.bedrock_stub --port 8090``.

In the image: ``python -m bedrock_stub``.

Every option has an environment variable (the image is configured by env only):

  BEDROCK_STUB_HOST         listen address (default 127.0.0.1; the image sets 0.0.0.0)
  BEDROCK_STUB_PORT         listen port (default 8090)
  BEDROCK_STUB_REGION       the only region accepted in the SigV4 credential scope (default us-east-1)
  BEDROCK_STUB_SIGV4        verify: recompute every signature with the issued secret (needs STS_URL and/or
                            CREDENTIALS); shape: check the Authorization header, credential scope (service
                            bedrock, region), signed headers, x-amz-date freshness and session-token presence,
                            but not the signature itself (for kind, where no STS hands the stub the secrets);
                            off: no checks (default verify)
  BEDROCK_STUB_STS_URL      moto server whose issued temporary credentials are accepted (verify mode)
  BEDROCK_STUB_CREDENTIALS  static credentials also accepted: AKID:SECRET[:TOKEN],...
  BEDROCK_STUB_ACCESS_LOG   1 to log every request (default 0: the benchmark measures the stub's overhead)
  BEDROCK_STUB_MAX_CALLS    how many recorded calls to keep (default 10000)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from .server import SIGV4_MODES, Config, build_app


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="bedrock_stub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=env.get("BEDROCK_STUB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("BEDROCK_STUB_PORT", "8090")))
    parser.add_argument("--region", default=env.get("BEDROCK_STUB_REGION", "us-east-1"))
    parser.add_argument("--sigv4", choices=SIGV4_MODES, default=env.get("BEDROCK_STUB_SIGV4", "verify"))
    parser.add_argument("--sts-url", default=env.get("BEDROCK_STUB_STS_URL") or None)
    parser.add_argument("--credentials", default=env.get("BEDROCK_STUB_CREDENTIALS", ""))
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=env.get("BEDROCK_STUB_ACCESS_LOG", "0").lower() in ("1", "true", "yes"),
    )
    parser.add_argument("--max-calls", type=int, default=int(env.get("BEDROCK_STUB_MAX_CALLS", "10000")))
    args = parser.parse_args(argv)
    return Config(
        host=args.host,
        port=args.port,
        region=args.region,
        sigv4=args.sigv4,
        sts_url=args.sts_url,
        credentials=args.credentials,
        access_log=args.access_log,
        max_calls=args.max_calls,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    log = logging.getLogger("bedrock_stub")
    if config.sigv4 == "verify" and not config.sts_url and not config.credentials:
        log.warning("sigv4=verify with neither an STS URL nor static credentials: every call will be refused")
    log.info(
        "Bedrock stub on http://%s:%d (region %s, sigv4 %s, sts %s)",
        config.host,
        config.port,
        config.region,
        config.sigv4,
        config.sts_url or "-",
    )
    web.run_app(
        build_app(config),
        host=config.host,
        port=config.port,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
