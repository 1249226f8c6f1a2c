"""Shared fixtures. `stack_env` gives the local stack's environment (.stack/env), starting the stack once
per test session when it is not already up (and stopping it again at the end in that case)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.stack import __main__ as stack
from tests.stack.common import read_env


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    started_here = False
    if not stack.running():
        if stack.up(set()) != 0:
            pytest.fail("the local stack did not start; see the [stack] lines above and .stack/logs/")
        started_here = True
    env = read_env()
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if started_here and not os.environ.get("LLMGW_KEEP_STACK"):
            stack.down()
