"""The CRDs' own validation (structural OpenAPI schema + CEL rules), offline: good manifests pass, bad ones
are rejected with a message naming the field. The same manifests go through the real kube-apiserver in
tests/integration/test_operator_crds.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from gateway_operator.models import GatewayTierSpec, GatewayUserSpec

ROOT = Path(__file__).resolve().parents[2]
CRDS = {
    doc["spec"]["names"]["kind"]: doc
    for p in sorted((ROOT / "crds").glob("*.yaml"))
    for doc in yaml.safe_load_all(p.read_text())
}


def schema_of(kind: str) -> dict[str, Any]:
    return dict(CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _rules(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from _rules(sub, (*path, name))


def _at(obj: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return False, None
        obj = obj[part]
    return True, obj


def validate(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Error messages as the apiserver would produce them (schema errors name the field path)."""
    schema = schema_of(kind)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    if errors:
        return errors
    env = celpy.Environment()
    for path, rule in _rules(schema):
        present, value = _at(obj, path)
        if not present:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if "oldSelf" in rule["rule"]:
            if old is None:
                continue  # transition rules only apply to updates
            old_present, old_value = _at(old, path)
            if not old_present:
                continue
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        if not bool(env.program(env.compile(rule["rule"])).evaluate(activation)):
            errors.append(rule["message"])
    return errors


def manifests(*names: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in names:
        for path in sorted((ROOT / "manifests").glob(name)):
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


TIER = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "GatewayTier",
    "metadata": {"name": "coding"},
    "spec": {"monthlyBudgetUSD": 20, "rpmLimit": 50, "models": ["model-balanced"]},
}
USER = {
    "apiVersion": "llmgateway.io/v1alpha1",
    "kind": "GatewayUser",
    "metadata": {"name": "bob", "namespace": "demo"},
    "spec": {"email": "bob@company.com", "tier": "coding"},
}


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


def test_standard_tiers_are_valid_and_match_the_user_guide() -> None:
    tiers = {d["metadata"]["name"]: d for d in manifests("tiers.yaml")}
    assert set(tiers) == {"drafting", "coding", "architect"}
    for doc in tiers.values():
        assert validate("GatewayTier", doc) == []
        GatewayTierSpec.model_validate(doc["spec"])
    assert (tiers["drafting"]["spec"]["monthlyBudgetUSD"], tiers["drafting"]["spec"]["rpmLimit"]) == (2, 10)
    assert (tiers["coding"]["spec"]["monthlyBudgetUSD"], tiers["coding"]["spec"]["rpmLimit"]) == (20, 50)
    assert (tiers["architect"]["spec"]["monthlyBudgetUSD"], tiers["architect"]["spec"]["rpmLimit"]) == (
        500,
        100,
    )
    assert set(tiers["drafting"]["spec"]["models"]) == {"model-cheap", "model-embed"}
    assert set(tiers["coding"]["spec"]["models"]) == {"model-balanced", "model-embed"}
    assert set(tiers["architect"]["spec"]["models"]) == {
        "model-reasoning",
        "model-reasoning-opus",
        "model-embed",
    }


def test_sample_users_are_valid() -> None:
    users = {d["metadata"]["name"]: d for d in manifests("users/*.yaml") if d["kind"] == "GatewayUser"}
    assert {n: u["spec"]["tier"] for n, u in users.items()} == {
        "alice": "architect",
        "bob": "coding",
        "charlie": "drafting",
    }
    for doc in users.values():
        assert doc["metadata"]["namespace"] == "demo"
        assert validate("GatewayUser", doc) == []
        GatewayUserSpec.model_validate(doc["spec"])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"monthlyBudgetUSD": -1}, "spec.monthlyBudgetUSD"),
        ({"rpmLimit": 0}, "spec.rpmLimit"),
        ({"rpmLimit": 1.5}, "spec.rpmLimit"),
        ({"models": []}, "spec.models"),
        ({"models": ["bad model"]}, "spec.models"),
        ({"models": None}, "models"),
        ({"tpmLimit": 0}, "spec.tpmLimit"),
        ({"tpmLimit": 10}, "spec.tpmLimit must be at least spec.rpmLimit"),
    ],
)
def test_bad_tiers_are_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    errors = validate("GatewayTier", with_spec(TIER, **changes))
    assert errors, f"{changes} was accepted"
    assert any(field in e for e in errors), errors


def test_tier_name_length_is_limited_by_cel() -> None:
    obj = copy.deepcopy(TIER)
    obj["metadata"]["name"] = "t" * 51
    assert any("metadata.name" in e for e in validate("GatewayTier", obj))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "spec.email"),
        ({"email": "a@b"}, "spec.email"),
        ({"email": None}, "email"),
        ({"tier": None}, "tier"),
        ({"tier": "Coding!"}, "spec.tier"),
        ({"monthlyBudgetUSD": -0.01}, "spec.monthlyBudgetUSD"),
        ({"rpmLimit": 0}, "spec.rpmLimit"),
        ({"suspended": "yes"}, "spec.suspended"),
        ({"secretName": "Bad_Name"}, "spec.secretName"),
    ],
)
def test_bad_users_are_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    errors = validate("GatewayUser", with_spec(USER, **changes))
    assert errors, f"{changes} was accepted"
    assert any(field in e for e in errors), errors


def test_email_is_immutable_but_other_fields_are_not() -> None:
    changed = with_spec(USER, email="robert@company.com")
    assert any("spec.email is immutable" in e for e in validate("GatewayUser", changed, old=USER))
    assert validate("GatewayUser", with_spec(USER, tier="architect", rpmLimit=5), old=USER) == []


def test_the_pydantic_models_agree_with_the_schema_on_samples() -> None:
    bad = with_spec(USER, email="nope")["spec"]
    with pytest.raises(ValueError):
        GatewayUserSpec.model_validate(bad)
    spec = GatewayUserSpec.model_validate({**USER["spec"], "monthlyBudgetUSD": 5, "secretName": "k"})
    assert spec.to_k8s() == {**USER["spec"], "monthlyBudgetUSD": 5.0, "secretName": "k", "suspended": False}


def test_printer_columns_are_the_ones_the_issue_lists() -> None:
    def columns(kind: str) -> list[str]:
        version = CRDS[kind]["spec"]["versions"][0]
        return [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]

    assert columns("GatewayTier") == ["Budget", "RPM", "Models", "Users", "Ready", "Age"]
    assert columns("GatewayUser") == ["Email", "Tier", "Spend", "Budget", "Ready", "Age"]
    for kind, short, scope in (("GatewayTier", "gwtier", "Cluster"), ("GatewayUser", "gwuser", "Namespaced")):
        spec = CRDS[kind]["spec"]
        assert spec["names"]["shortNames"] == [short]
        assert spec["names"]["categories"] == ["llmgateway"]
        assert spec["scope"] == scope
        assert spec["versions"][0]["subresources"] == {"status": {}}
