"""`gatewayctl validate`: the CRD schema, its CEL rules and the cross-object checks, offline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway_operator.cli import resources
from gateway_operator.cli.main import app
from gateway_operator.cli.validate import (
    Report,
    Validator,
    parse_documents,
    schemas_from_crds,
    validate_documents,
)
from tests.stack.common import REPO_ROOT

runner = CliRunner()
MODELS = {"model-cheap", "model-balanced", "model-reasoning", "model-reasoning-opus", "model-embed"}


def check(text: str, cluster_tiers: set[str] | None = None, models: set[str] | None = MODELS) -> list[str]:
    validator = Validator(schemas_from_crds(resources.load_crds()), models, cluster_tiers)
    docs = parse_documents(textwrap.dedent(text), "m.yaml", validator.report)
    return [f.format() for f in validate_documents(validator, docs).findings]


TIER = """\
apiVersion: llmgateway.io/v1alpha1
kind: GatewayTier
metadata:
  name: coding
spec:
  monthlyBudgetUSD: 20
  rpmLimit: 50
  models: [model-balanced]
"""


def user(name: str, email: str, tier: str = "coding", extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        apiVersion: llmgateway.io/v1alpha1
        kind: GatewayUser
        metadata:
          name: {name}
          namespace: demo
        spec:
          email: {email}
          tier: {tier}
        """
        )
        + extra
    )


def test_shipped_crds_are_the_repository_crds() -> None:
    shipped = sorted(p.name for p in (resources.data_dir() / "crds").iterdir())
    assert shipped == sorted(p.name for p in (REPO_ROOT / "crds").glob("*.yaml"))
    assert {c["spec"]["names"]["kind"] for c in resources.load_crds()} == {"GatewayTier", "GatewayUser"}
    assert resources.gateway_models() == MODELS


def test_repository_manifests_are_valid() -> None:
    result = runner.invoke(app, ["validate", str(REPO_ROOT / "manifests")])
    assert result.exit_code == 0, result.output
    assert "3 tier(s), 3 user(s); 0 error(s)" in result.output


def test_a_valid_set_has_no_findings() -> None:
    assert check(TIER + "---\n" + user("bob", "bob@company.com")) == []


def test_schema_violations_name_document_object_and_field() -> None:
    found = check(
        """\
        apiVersion: llmgateway.io/v1alpha1
        kind: GatewayTier
        metadata:
          name: bad
        spec:
          monthlyBudgetUSD: -1
          rpmLimit: fast
          models: []
          colour: blue
        ---
        apiVersion: llmgateway.io/v1alpha1
        kind: GatewayUser
        metadata:
          name: Not_Valid
          namespace: demo
        spec:
          email: not-an-email
        """
    )
    tier, user_ = "m.yaml:0: GatewayTier/bad: ", "m.yaml:1: GatewayUser/demo/Not_Valid: "
    assert f"{tier}spec.monthlyBudgetUSD: invalid value -1: must be greater than or equal to 0" in found
    assert f"{tier}spec.rpmLimit: must be of type integer, got 'fast'" in found
    assert f"{tier}spec.models: invalid value []: must have at least 1 item(s)" in found
    assert any(f.startswith(f"{tier}spec.colour: unknown field") for f in found)
    assert any(f.startswith(f"{user_}metadata.name: invalid name") for f in found)
    assert any(f.startswith(f"{user_}spec.email: invalid value 'not-an-email': must match") for f in found)
    assert f"{user_}spec.tier: required field is missing" in found
    assert len(found) == 7


def test_cel_rules_are_evaluated() -> None:
    tpm = TIER.replace("rpmLimit: 50", "rpmLimit: 50\n  tpmLimit: 10")
    found = check(tpm)
    assert found == [
        "m.yaml:0: GatewayTier/coding: spec: spec.tpmLimit must be at least spec.rpmLimit "
        "(every request uses at least one token)"
    ]
    assert check(TIER.replace("rpmLimit: 50", "rpmLimit: 50\n  tpmLimit: 50")) == []
    long_name = "t" * 51
    found = check(TIER.replace("name: coding", f"name: {long_name}"))
    assert len(found) == 1 and "at most 50 characters" in found[0] and f"GatewayTier/{long_name}" in found[0]


def test_transition_rules_are_skipped_offline() -> None:
    # spec.email carries `self == oldSelf`; a create has no old object, so it must not fail
    assert check(TIER + "---\n" + user("bob", "bob@company.com")) == []


def test_cross_object_checks() -> None:
    found = check(
        TIER
        + "---\n"
        + user("bob", "bob@company.com")
        + "---\n"
        + user("bob2", "BOB@company.com")
        + "---\n"
        + user("carl", "carl@company.com", tier="gold")
        + "---\n"
        + user("bob", "other@company.com")
    )
    assert (
        "m.yaml:2: GatewayUser/demo/bob2: spec.email: duplicate email 'BOB@company.com': also used by "
        "GatewayUser/demo/bob (m.yaml:1)" in found
    )
    assert any(
        f.startswith("m.yaml:3: GatewayUser/demo/carl: spec.tier: tier 'gold' is not defined in these files")
        and "--cluster" in f
        for f in found
    )
    assert "m.yaml:4: GatewayUser/demo/bob: metadata.name: defined twice (also in m.yaml:1)" in found
    assert len(found) == 3


def test_cluster_tiers_satisfy_references() -> None:
    assert check(user("bob", "bob@company.com", tier="gold"), cluster_tiers={"gold"}) == []


def test_models_must_be_served() -> None:
    found = check(TIER.replace("[model-balanced]", "[model-balanced, gpt-9]"))
    assert len(found) == 1
    assert found[0].startswith("m.yaml:0: GatewayTier/coding: spec.models[1]: model 'gpt-9' is not served")
    assert check(TIER, models={"something-else"})[0].startswith(
        "m.yaml:0: GatewayTier/coding: spec.models[0]"
    )
    assert check(TIER.replace("[model-balanced]", "[gpt-9]"), models=None) == []


def test_other_documents_are_ignored_and_unknown_kinds_reported() -> None:
    found = check(
        """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: demo}
        ---
        apiVersion: llmgateway.io/v1alpha1
        kind: GatewayTeam
        metadata: {name: x}
        ---
        apiVersion: llmgateway.io/v2
        kind: GatewayTier
        metadata: {name: y}
        """
    )
    assert len(found) == 2
    assert found[0].startswith("m.yaml:1: GatewayTeam/x: kind: unknown kind 'GatewayTeam'")
    assert found[1].startswith("m.yaml:2: GatewayTier/y: apiVersion: llmgateway.io/v2 is not served")


def test_invalid_yaml_is_reported_with_its_line() -> None:
    report = Report()
    parse_documents("a: 1\n---\nb: [unclosed\nc: 2\n", "broken.yaml", report)
    assert len(report.findings) == 1
    assert report.findings[0].format().startswith("broken.yaml:1: -: -: invalid YAML at line")
    assert report.findings[0].severity == "warning"  # not one of ours: a template, say
    ours = Report()
    parse_documents("apiVersion: llmgateway.io/v1alpha1\nkind: [x\n", "ours.yaml", ours)
    assert [f.severity for f in ours.findings] == ["error"]


def test_a_folder_walk_skips_hidden_folders(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("a: [")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "y.yml").write_text("a: [")
    (tmp_path / "tiers.yaml").write_text(TIER)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0 and "OK: 1 file(s), 1 tier(s)" in result.output


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "tiers.yaml").write_text(TIER)
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "bob.yml").write_text(user("bob", "bob@company.com"))
    return tmp_path


def test_cli_exit_codes_and_github_annotations(manifests: Path) -> None:
    assert runner.invoke(app, ["validate", str(manifests)]).exit_code == 0
    bad = manifests / "users" / "carl.yaml"
    bad.write_text(user("carl", "carl@company.com", tier="gold"))
    result = runner.invoke(app, ["validate", str(manifests)])
    assert result.exit_code == 1
    assert f"{bad}:0: GatewayUser/demo/carl: spec.tier: tier 'gold'" in result.output
    assert "FAILED: 3 file(s), 1 tier(s), 2 user(s); 1 error(s)" in result.output
    github = runner.invoke(app, ["validate", "--format", "github", str(bad), str(manifests / "tiers.yaml")])
    assert github.exit_code == 1
    assert f"::error file={bad},line=8::GatewayUser/demo/carl: spec.tier: tier 'gold'" in github.output


def test_cli_models_flag_and_missing_paths(manifests: Path) -> None:
    result = runner.invoke(app, ["validate", "--models", "model-cheap", str(manifests)])
    assert result.exit_code == 1 and "model 'model-balanced' is not served" in result.output
    missing = runner.invoke(app, ["validate", str(manifests / "nope.yaml")])
    assert missing.exit_code == 1 and "file not found" in missing.output
