"""gatewayctl output: YAML for GitOps, table/json/csv lists, usage aggregation, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway_operator.cli import cmd_users
from gateway_operator.cli.cmd_usage import build_report, month_range, spend_from_daily
from gateway_operator.cli.errors import CliError
from gateway_operator.cli.main import app
from gateway_operator.cli.views import age, user_row

runner = CliRunner()
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig whose current context points at a closed port, namespace team-a."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}
                ],
                "current-context": "ctx",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_users_add_yaml_uses_the_context_namespace_and_derived_name() -> None:
    result = runner.invoke(
        app,
        [
            "users",
            "add",
            "--email",
            "Dana@Company.com",
            "--tier",
            "Coding",
            "--display-name",
            "Dána",
            "-o",
            "yaml",
        ],
    )
    assert result.exit_code == 0, result.output
    (doc,) = list(yaml.safe_load_all(result.stdout))
    assert doc == {
        "apiVersion": "llmgateway.io/v1alpha1",
        "kind": "GatewayUser",
        "metadata": {"name": "dana-company-com", "namespace": "team-a"},
        "spec": {"email": "dana@company.com", "tier": "coding", "displayName": "Dána"},
    }


def test_users_add_bad_email_is_one_line_and_exit_1() -> None:
    result = runner.invoke(app, ["users", "add", "--email", "nope", "--tier", "coding", "-o", "yaml"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --email: bad email 'nope'")


def test_unreachable_cluster_is_exit_3_with_one_line() -> None:
    result = runner.invoke(app, ["users", "list"])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the Kubernetes API at https://127.0.0.1:9" in lines[0]
    assert "check the kubeconfig context" in lines[0]


def test_tiers_apply_yaml_prints_the_three_standard_tiers() -> None:
    result = runner.invoke(app, ["tiers", "apply", "-o", "yaml"])
    assert result.exit_code == 0, result.output
    tiers = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(result.stdout)}
    assert tiers["drafting"]["monthlyBudgetUSD"] == 2 and tiers["drafting"]["rpmLimit"] == 10
    assert tiers["coding"]["models"] == ["model-balanced", "model-embed"]
    assert tiers["architect"]["models"] == ["model-reasoning", "model-reasoning-opus", "model-embed"]


def test_import_writes_one_file_per_user_and_rerun_changes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    text = "email,tier,alias\r\nalice@company.com,architect,Alice Smith\r\nzoe@company.com,coding,Zoë\r\n"
    source.write_bytes(text.encode("utf-8-sig"))
    out = tmp_path / "gitops"
    first = runner.invoke(app, ["users", "import", str(source), "--namespace", "demo", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "(2 written, 0 unchanged)" in first.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["alice-company-com.yaml", "zoe-company-com.yaml"]
    zoe = yaml.safe_load((out / "zoe-company-com.yaml").read_text(encoding="utf-8"))
    assert zoe["spec"] == {"email": "zoe@company.com", "tier": "coding", "displayName": "Zoë"}
    assert zoe["metadata"]["namespace"] == "demo"
    second = runner.invoke(app, ["users", "import", str(source), "--namespace", "demo", "--out", str(out)])
    assert "(0 written, 2 unchanged)" in second.stdout
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 1  # tiers not in the set...
    assert runner.invoke(app, ["validate", str(out), str(Path("manifests/tiers.yaml"))]).exit_code == 0


def test_import_with_problems_writes_nothing_and_lists_every_line(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("email,tier,alias\nok@company.com,coding,A\nbad,coding,B\nx@company.com,gold,C\n")
    out = tmp_path / "gitops"
    result = runner.invoke(app, ["users", "import", str(source), "--out", str(out)])
    assert result.exit_code == 1
    assert not out.exists()
    err = result.stderr.splitlines()
    assert err[0] == f"{source}:3: bad email 'bad': expected name@domain.tld (ASCII, no spaces)"
    assert err[1].startswith(f"{source}:4: unknown tier 'gold'")
    assert (
        err[2] == f"error: 2 problem(s) in {source}; nothing was written or applied; fix the lines above and "
        "run the command again"
    )


def test_import_tiers_option_reads_custom_tiers(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("apiVersion: llmgateway.io/v1alpha1\nkind: GatewayTier\nmetadata: {name: gold}\n")
    source = tmp_path / "users.csv"
    source.write_text("email,tier\nx@company.com,gold\n")
    result = runner.invoke(app, ["users", "import", str(source), "--tiers", str(tiers)])
    assert result.exit_code == 0, result.output
    assert "1 rows valid; nothing written" in result.stdout


def _user(name: str, email: str, tier: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "demo", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "spec": {"email": email, "tier": tier},
        "status": status or {},
    }


TIERS = {
    "coding": {"metadata": {"name": "coding"}, "spec": {"monthlyBudgetUSD": 20, "rpmLimit": 50}},
    "architect": {"metadata": {"name": "architect"}, "spec": {"monthlyBudgetUSD": 500, "rpmLimit": 100}},
}
READY = {"type": "Ready", "status": "True", "reason": "Reconciled"}
USERS = [
    _user(
        "bob",
        "bob@company.com",
        "coding",
        {
            "spendUSD": 5.5,
            "maxBudgetUSD": 20.0,
            "rpmLimit": 50,
            "conditions": [READY],
            "secretName": "bob-llm-key",
        },
    ),
    _user(
        "alice",
        "alice@company.com",
        "architect",
        {"conditions": [{"type": "Ready", "status": "False", "reason": "BackendUnavailable"}]},
    ),
]


def test_user_row_falls_back_to_tier_limits_and_computes_remaining() -> None:
    bob = user_row(USERS[0], TIERS, NOW)
    assert (bob["spendUSD"], bob["budgetUSD"], bob["remainingUSD"], bob["rpm"], bob["ready"]) == (
        5.5,
        20.0,
        14.5,
        50,
        "True",
    )
    alice = user_row(USERS[1], TIERS, NOW)
    assert (alice["spendUSD"], alice["budgetUSD"], alice["remainingUSD"], alice["rpm"]) == (
        None,
        500.0,
        500.0,
        100,
    )
    assert alice["ready"] == "False (BackendUnavailable)"
    over = user_row(_user("c", "c@company.com", "coding", {"spendUSD": 25, "maxBudgetUSD": 20}), TIERS, NOW)
    assert over["remainingUSD"] == 0.0
    assert age(datetime(2026, 11, 25, 12, 0, tzinfo=UTC), NOW) == "3d"
    assert age(datetime(2026, 11, 28, 11, 59, 30, tzinfo=UTC), NOW) == "30s"


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the cluster read of `users list` (a fake: this tests formatting only)."""

    async def fake_rows(
        context: str | None, namespace: str | None, all_namespaces: bool
    ) -> list[dict[str, Any]]:
        rows = [user_row(u, TIERS, NOW) for u in USERS]
        rows[0]["keyAge"] = "2d"
        return rows

    monkeypatch.setattr(cmd_users, "_list_rows", fake_rows)


@pytest.mark.usefixtures("listed")
def test_users_list_formats() -> None:
    table = runner.invoke(app, ["users", "list"])
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "EMAIL", "TIER", "SPEND", "BUDGET", "REMAINING", "RPM", "READY", "KEY", "AGE"]
    assert (
        "$5.50" in table.stdout and "$14.50" in table.stdout and "False (BackendUnavailable)" in table.stdout
    )

    as_json = json.loads(runner.invoke(app, ["users", "list", "-o", "json"]).stdout)
    assert as_json[0]["email"] == "bob@company.com" and as_json[0]["remainingUSD"] == 14.5
    assert as_json[0]["keyAge"] == "2d" and as_json[1]["spendUSD"] is None

    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["users", "list", "-A", "-o", "csv"]).stdout)))
    assert list(rows[0]) == [
        "namespace",
        "name",
        "email",
        "tier",
        "spendUSD",
        "budgetUSD",
        "remainingUSD",
        "rpm",
        "ready",
        "keyAge",
    ]
    assert rows[0]["namespace"] == "demo" and rows[0]["spendUSD"] == "5.5" and rows[1]["spendUSD"] == ""


def test_usage_from_status_and_from_litellm_daily_records() -> None:
    tiers, users = build_report(USERS, TIERS, None)
    assert [(t["tier"], t["users"], t["spendUSD"], t["share"]) for t in tiers] == [
        ("coding", 1, 5.5, 100.0),
        ("architect", 1, 0.0, 0.0),
    ]
    days = [
        {
            "breakdown": {
                "api_keys": {
                    "h1": {
                        "metrics": {"spend": 1.25, "api_requests": 3},
                        "metadata": {"user_id": "bob@company.com", "team_id": "llmgw-tier-coding"},
                    },
                    "h2": {
                        "metrics": {"spend": 0.5, "api_requests": 1},
                        "metadata": {"user_id": "gone@company.com", "team_id": "llmgw-tier-architect"},
                    },
                }
            }
        },
        {
            "breakdown": {
                "api_keys": {
                    "h1": {
                        "metrics": {"spend": 0.75, "api_requests": 2},
                        "metadata": {"user_id": "bob@company.com"},
                    }
                }
            }
        },
    ]
    spend = spend_from_daily(days)
    assert spend["bob@company.com"]["spendUSD"] == 2.0 and spend["bob@company.com"]["requests"] == 5
    tiers, users = build_report(USERS, TIERS, spend)
    by_email = {u["email"]: u for u in users}
    assert by_email["bob@company.com"]["spendUSD"] == 2.0
    assert by_email["alice@company.com"]["spendUSD"] == 0.0
    assert (
        by_email["gone@company.com"]["tier"] == "architect" and by_email["gone@company.com"]["name"] is None
    )
    assert {t["tier"]: t["spendUSD"] for t in tiers} == {"coding": 2.0, "architect": 0.5}


def test_month_range_checks() -> None:
    today = NOW.date()
    assert month_range("2026-11", today) == (datetime(2026, 11, 1).date(), today)
    assert month_range("2026-02", today)[1].day == 28
    for bad in ("2026-13", "11-2026", "2027-01"):
        with pytest.raises(CliError, match=r"month|future"):
            month_range(bad, today)


def test_usage_of_a_past_month_without_litellm_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITELLM_ADMIN_URL", raising=False)
    result = runner.invoke(app, ["usage", "--month", "2020-01"])
    assert result.exit_code == 1
    assert "export LITELLM_ADMIN_URL and LITELLM_MASTER_KEY" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["users"],
        ["users", "add"],
        ["users", "import"],
        ["users", "list"],
        ["tiers"],
        ["tiers", "list"],
        ["tiers", "apply"],
        ["health"],
        ["validate"],
        ["usage"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: gatewayctl" in result.stdout
