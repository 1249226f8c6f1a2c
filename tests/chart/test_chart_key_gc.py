"""The chart's adoption policy and key GC settings reach the operator's environment, and values the
operator would reject are rejected by values.schema.json first."""

from __future__ import annotations

import pytest

from gateway_operator.settings import Settings
from tests.chart.helm import VALUE_SETS, env_of, render, template_error

DEFAULT = VALUE_SETS["default"]


def operator_env(sets: dict[str, str] | None = None) -> dict[str, str]:
    deployment = render(DEFAULT, sets).one("Deployment", "-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {name: str(item.get("value")) for name, item in env_of(container).items()}


def test_defaults_are_the_safe_ones_and_the_operator_reads_them() -> None:
    env = operator_env()
    assert (env["ADOPTION_POLICY"], env["GC_MODE"], env["ORPHAN_GRACE_SECONDS"]) == (
        "Ignore",
        "revoke",
        "120",
    )
    settings = Settings.model_validate(
        {k: env[k] for k in ("ADOPTION_POLICY", "GC_MODE", "ORPHAN_GRACE_SECONDS")}
    )
    assert (settings.adoption_policy, settings.gc_mode, settings.orphan_grace_seconds) == (
        "Ignore",
        "revoke",
        120,
    )


def test_overrides_reach_the_operator() -> None:
    env = operator_env(
        {
            "operator.adoptionPolicy": "Adopt",
            "operator.keyGC.mode": "dry-run",
            "operator.keyGC.graceSeconds": "600",
        }
    )
    assert (env["ADOPTION_POLICY"], env["GC_MODE"], env["ORPHAN_GRACE_SECONDS"]) == (
        "Adopt",
        "dry-run",
        "600",
    )


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("operator.adoptionPolicy", "Steal", "/operator/adoptionPolicy"),
        ("operator.keyGC.mode", "delete-all", "/operator/keyGC/mode"),
        ("operator.keyGC.graceSeconds", "-1", "/operator/keyGC/graceSeconds"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(key: str, value: str, where: str) -> None:
    assert where in template_error(DEFAULT, {key: value})
