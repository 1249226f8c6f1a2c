"""manifests/aws: valid JSON, and the Bedrock policy grants exactly the two invoke actions on exactly the
models of the shared LiteLLM config (cross-region profiles: the profile plus the foundation model in
every destination region)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.stack.common import LITELLM_CONFIG, REPO_ROOT

AWS = REPO_ROOT / "manifests" / "aws"
ACTIONS = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
# Destination regions AWS documents for the `us.` profiles of the mapping (manifests/aws/README.md).
US_PROFILE_REGIONS = ("us-east-1", "us-east-2", "us-west-2")
PLACEHOLDERS = {
    "${AWS_ACCOUNT_ID}",
    "${AWS_REGION}",
    "${OIDC_PROVIDER}",
    "${NAMESPACE}",
    "${SERVICE_ACCOUNT}",
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((AWS / name).read_text())
    return data


def expected_resources() -> set[str]:
    config = yaml.safe_load(Path(LITELLM_CONFIG).read_text())
    resources: set[str] = set()
    for entry in config["model_list"]:
        model = entry["litellm_params"]["model"]
        assert model.startswith("bedrock/"), model
        model_id = model.removeprefix("bedrock/").removeprefix("converse/")
        if model_id.startswith("us."):
            resources.add(f"arn:aws:bedrock:${{AWS_REGION}}:${{AWS_ACCOUNT_ID}}:inference-profile/{model_id}")
            resources |= {
                f"arn:aws:bedrock:{region}::foundation-model/{model_id.removeprefix('us.')}"
                for region in US_PROFILE_REGIONS
            }
        else:
            resources.add(f"arn:aws:bedrock:${{AWS_REGION}}::foundation-model/{model_id}")
    return resources


def test_every_file_is_valid_json_with_only_known_placeholders() -> None:
    files = sorted(AWS.glob("*.json"))
    assert {f.name for f in files} == {
        "bedrock-invoke-policy.json",
        "irsa-trust-policy.json",
        "pod-identity-trust-policy.json",
    }
    for path in files:
        text = path.read_text()
        data = json.loads(text)
        assert data["Version"] == "2012-10-17"
        assert set(re.findall(r"\$\{[A-Z_]+\}", text)) <= PLACEHOLDERS, path.name


def test_bedrock_policy_is_exactly_the_model_mapping() -> None:
    policy = load("bedrock-invoke-policy.json")
    granted: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}, "no NotAction/NotResource/Condition"
        assert set(statement["Action"]) == ACTIONS
        for resource in statement["Resource"]:
            assert "*" not in resource and "?" not in resource, resource
            granted.add(resource)
    assert granted == expected_resources()


def test_irsa_trust_policy_pins_subject_and_audience() -> None:
    (statement,) = load("irsa-trust-policy.json")["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": "arn:aws:iam::${AWS_ACCOUNT_ID}:oidc-provider/${OIDC_PROVIDER}"
    }
    assert statement["Condition"] == {
        "StringEquals": {
            "${OIDC_PROVIDER}:sub": "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}",
            "${OIDC_PROVIDER}:aud": "sts.amazonaws.com",
        }
    }


def test_pod_identity_trust_policy() -> None:
    (statement,) = load("pod-identity-trust-policy.json")["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(statement["Action"]) == {"sts:AssumeRole", "sts:TagSession"}


def test_eksctl_snippet_attaches_that_policy_to_the_chart_service_account() -> None:
    config = yaml.safe_load((AWS / "eksctl-iam.yaml").read_text())
    assert config["kind"] == "ClusterConfig" and config["iam"]["withOIDC"] is True
    (account,) = config["iam"]["serviceAccounts"]
    assert account["metadata"] == {"name": "${SERVICE_ACCOUNT}", "namespace": "${NAMESPACE}"}
    assert account["roleOnly"] is True  # the chart owns the ServiceAccount and its annotation
    assert account["attachPolicyARNs"] == ["arn:aws:iam::${AWS_ACCOUNT_ID}:policy/llm-gateway-bedrock-invoke"]
