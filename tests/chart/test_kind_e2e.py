"""What can be checked here of `make e2e-kind` (no Docker on this machine): the script fails early and
clearly without docker or kind, the images' build contexts hold what their Dockerfiles copy, and the
script, the kind values and the chart agree on names and ports. (The kind values' render and server-side
dry run are in test_chart_render.py / test_chart_apiserver.py with the other value sets.)"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.stack.common import REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "kind" / "e2e-kind.sh"
KIND_VALUES = yaml.safe_load((REPO_ROOT / "tests" / "kind" / "values.yaml").read_text())
OPERATOR_DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
STUB_DOCKERFILE = REPO_ROOT / "tests" / "stack" / "bedrock_stub" / "Dockerfile"


def run_script(tmp_path: Path, fake_tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the script with a PATH holding only basic tools plus the given fakes (fault injection)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "printf", "cat", "grep", "mkdir"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    for name, body in fake_tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=30)


def test_script_is_executable_and_valid_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_fails_early_without_docker(tmp_path: Path) -> None:
    result = run_script(tmp_path, {})
    assert result.returncode == 1
    assert "docker is not installed" in result.stderr
    assert not (tmp_path / "bin" / "kind").exists()


def test_fails_early_without_a_docker_daemon(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"docker": "exit 1"})
    assert result.returncode == 1
    assert "daemon is not reachable" in result.stderr


def test_fails_early_without_kind(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"docker": "exit 0"})
    assert result.returncode == 1
    assert "kind is not installed" in result.stderr


def copied_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


@pytest.mark.parametrize(
    ("dockerfile", "context"),
    [(OPERATOR_DOCKERFILE, REPO_ROOT), (STUB_DOCKERFILE, STUB_DOCKERFILE.parent)],
)
def test_build_contexts_hold_what_the_dockerfiles_copy(dockerfile: Path, context: Path) -> None:
    sources = copied_sources(dockerfile)
    assert sources
    for source in sources:
        if source.endswith("*"):  # optional file (README.md* in the operator image)
            continue
        assert (context / source).exists(), f"{dockerfile}: COPY {source} missing from {context}"


def test_images_are_non_root_and_pinned() -> None:
    operator = OPERATOR_DOCKERFILE.read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[a-f0-9]{64}", operator)
    assert re.search(r"^USER 10001:10001$", operator, re.M)
    assert 'ENTRYPOINT ["python", "-m", "gateway_operator"]' in operator
    stub = STUB_DOCKERFILE.read_text()
    assert re.search(r"^USER \d+:\d+$", stub, re.M) and "USER 0" not in stub


def test_script_values_and_chart_agree() -> None:
    script = SCRIPT.read_text()
    port = re.search(r"^LOCAL_PORT=(\d+)", script, re.M)
    assert port
    assert KIND_VALUES["operator"]["gatewayPublicUrl"] == f"http://127.0.0.1:{port.group(1)}/v1"
    for component in ("operator", "bedrockStub"):
        image = KIND_VALUES[component]["image"]
        assert f"{image['repository']}:{image['tag']}" in script, component
        assert image["pullPolicy"] == "Never"  # loaded with `kind load`, never pulled
    assert KIND_VALUES["postgresql"]["enabled"] and KIND_VALUES["bedrockStub"]["enabled"]
    assert KIND_VALUES["litellm"]["masterKeySecret"]["name"] in script
    assert KIND_VALUES["postgresql"]["auth"]["existingSecret"] in script
    assert "svc/$RELEASE-llm-gateway-litellm" in script and "RELEASE=gw" in script
    assert "LLMGW_E2E_EXTERNAL=1" in script and "pytest tests/e2e" in script
