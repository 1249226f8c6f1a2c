"""The CRDs in the real kube-apiserver: good manifests are accepted, bad ones rejected with a message that
names the field (server-side dry run: nothing is stored, no operator involved)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
TIER = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "GatewayTier",
    "metadata": {"name": "crd-check"},
    "spec": {"monthlyBudgetUSD": 20, "rpmLimit": 50, "models": ["model-balanced"]},
}
USER = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "GatewayUser",
    "metadata": {"name": "crd-check", "namespace": "default"},
    "spec": {"email": "bob@company.com", "tier": "coding"},
}


def dry_run(doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    from tests.stack.kubectl import kubectl_path

    return subprocess.run(
        [kubectl_path(), "apply", "--dry-run=server", "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["spec"].update(changes)
    return obj


def test_shipped_manifests_are_accepted(stack_env: dict[str, str]) -> None:
    docs = [
        d
        for p in [ROOT / "manifests" / "tiers.yaml", *sorted((ROOT / "manifests" / "users").glob("*.yaml"))]
        for d in yaml.safe_load_all(p.read_text())
        if d and d["kind"] in ("GatewayTier", "GatewayUser")
    ]
    assert len(docs) == 6
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"].pop("namespace", None)  # the demo namespace may not exist: dry-run in default
        if doc["kind"] == "GatewayUser":
            doc["metadata"]["namespace"] = "default"
        result = dry_run(doc)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (with_spec(TIER, monthlyBudgetUSD=-1), "spec.monthlyBudgetUSD"),
        (with_spec(TIER, rpmLimit=0), "spec.rpmLimit"),
        (with_spec(TIER, models=[]), "spec.models"),
        (with_spec(TIER, tpmLimit=10), "spec.tpmLimit must be at least spec.rpmLimit"),
        (with_spec(USER, email="not-an-email"), "spec.email"),
        (with_spec(USER, tier="Bad Tier"), "spec.tier"),
        (with_spec(USER, rpmLimit=0), "spec.rpmLimit"),
        (with_spec(USER, secretName="Bad_Name"), "spec.secretName"),
    ],
    ids=lambda value: value if isinstance(value, str) else value["kind"],
)
def test_bad_manifests_are_rejected_naming_the_field(
    stack_env: dict[str, str], doc: dict[str, Any], field: str
) -> None:
    result = dry_run(doc)
    assert result.returncode != 0, f"accepted: {doc['spec']}"
    assert field in result.stderr, result.stderr


def test_email_is_immutable_in_the_apiserver(stack_env: dict[str, str]) -> None:
    from tests.stack.kubectl import kubectl_path

    name = "crd-immutable"
    doc = copy.deepcopy(USER)
    doc["metadata"]["name"] = name
    # A tier that does not exist: an operator watching makes no LiteLLM object for this user.
    doc["spec"] = {"email": "crd-immutable@company.com", "tier": "crd-no-such-tier"}
    created = subprocess.run(
        [kubectl_path(), "create", "-f", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert created.returncode == 0, created.stderr
    try:
        result = dry_run(with_spec(doc, email="robert@company.com"))
        assert result.returncode != 0 and "spec.email is immutable" in result.stderr, result.stderr
    finally:
        # No operator needs to be involved: remove our finalizer if one was added meanwhile.
        subprocess.run(
            [
                kubectl_path(),
                "patch",
                "gatewayuser",
                name,
                "-n",
                "default",
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
            ],
            capture_output=True,
            env=dict(os.environ),
        )
        subprocess.run(
            [
                kubectl_path(),
                "delete",
                "gatewayuser",
                name,
                "-n",
                "default",
                "--ignore-not-found",
                "--wait=false",
            ],
            capture_output=True,
            env=dict(os.environ),
        )
