"""gatewayctl against the local stack's real kube-apiserver: the installed console script, run the way an
admin runs it (current kubeconfig context from KUBECONFIG). Works with or without the operator running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.stack import kubectl as k
from tests.stack.common import REPO_ROOT

pytestmark = pytest.mark.stack

GATEWAYCTL = str(Path(sys.executable).with_name("gatewayctl"))


def gatewayctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [GATEWAYCTL, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120, cwd=REPO_ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"gatewayctl {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def users_in(namespace: str) -> dict[str, dict[str, Any]]:
    out = k.kubectl("get", "gatewayusers", "-n", namespace, "-o", "json")
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


@pytest.fixture(scope="module")
def namespace(stack_env: dict[str, str]) -> Iterator[str]:
    name = f"gwctl-{uuid.uuid4().hex[:6]}"
    k.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        k.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def tiers(stack_env: dict[str, str]) -> None:
    gatewayctl("tiers", "apply")


def test_tiers_apply_is_idempotent_and_listed(stack_env: dict[str, str]) -> None:
    first = gatewayctl("tiers", "apply")
    for tier in ("drafting", "coding", "architect"):
        assert f"GatewayTier/{tier} " in first.stdout
    again = gatewayctl("tiers", "apply")
    assert again.stdout.split() == [
        "GatewayTier/drafting",
        "unchanged",
        "GatewayTier/coding",
        "unchanged",
        "GatewayTier/architect",
        "unchanged",
    ]
    listed = {t["name"]: t for t in json.loads(gatewayctl("tiers", "list", "-o", "json").stdout)}
    assert (listed["drafting"]["budgetUSD"], listed["drafting"]["rpm"]) == (2.0, 10)
    assert listed["architect"]["models"] == "model-reasoning,model-reasoning-opus,model-embed"
    table = gatewayctl("tiers", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "BUDGET", "RPM"] and "$500.00" in table


@pytest.mark.usefixtures("tiers")
def test_users_add_creates_then_is_a_no_op(namespace: str) -> None:
    tag = namespace.removeprefix("gwctl-")
    email = f"add{tag}@company.com"
    created = gatewayctl(
        "users", "add", "--email", email, "--tier", "coding", "-n", namespace, "--display-name", "Zoë Ädd"
    )
    name = f"add{tag}-company-com"  # a plain address: readable name, no hash suffix
    assert f"GatewayUser/{namespace}/{name} created" in created.stdout
    assert f"kubectl get secret {name}-llm-key -n {namespace}" in created.stdout
    obj = users_in(namespace)[name]
    assert obj["spec"]["email"] == email and obj["spec"]["tier"] == "coding"
    assert obj["spec"]["displayName"] == "Zoë Ädd"
    generation = obj["metadata"]["generation"]
    again = gatewayctl(
        "users", "add", "--email", email, "--tier", "coding", "-n", namespace, "--display-name", "Zoë Ädd"
    )
    assert f"GatewayUser/{namespace}/{name} unchanged" in again.stdout
    assert users_in(namespace)[name]["metadata"]["generation"] == generation
    moved = gatewayctl(
        "users", "add", "--email", email, "--tier", "architect", "-n", namespace, "--display-name", "Zoë Ädd"
    )
    assert "updated" in moved.stdout
    assert users_in(namespace)[name]["spec"]["tier"] == "architect"


@pytest.mark.usefixtures("tiers")
def test_users_add_refuses_unknown_tier_and_taken_email(namespace: str) -> None:
    unknown = gatewayctl(
        "users", "add", "--email", "x@company.com", "--tier", "gold", "-n", namespace, check=False
    )
    assert unknown.returncode == 1
    assert (
        "tier 'gold' does not exist in the cluster" in unknown.stderr
        and "gatewayctl tiers apply" in unknown.stderr
    )
    gatewayctl("users", "add", "--email", "taken@company.com", "--tier", "coding", "-n", namespace)
    clash = gatewayctl(
        "users",
        "add",
        "--email",
        "Taken@company.com",
        "--tier",
        "coding",
        "-n",
        namespace,
        "--name",
        "someone-else",
        check=False,
    )
    assert clash.returncode == 1 and "already used by GatewayUser" in clash.stderr
    assert "someone-else" not in users_in(namespace)


@pytest.mark.usefixtures("tiers")
def test_import_apply_then_rerun_is_a_no_op(namespace: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "users.csv"
    rows = [
        ("imp-alice@company.com", "architect", "Alice Smith"),
        ("imp.bob@company.com", "coding", "Bob Jönes"),
        ("imp-charlie@company.com", "drafting", ""),
    ]
    text = "email,tier,alias\r\n" + "".join(f"{e},{t},{a}\r\n" for e, t, a in rows)
    csv_file.write_bytes(text.encode("utf-8-sig"))
    first = gatewayctl("users", "import", str(csv_file), "-n", namespace, "--apply")
    assert f"3 GatewayUsers in namespace {namespace}: 3 created, 0 updated, 0 unchanged" in first.stdout
    before = {n: u for n, u in users_in(namespace).items() if u["spec"]["email"].startswith("imp")}
    assert sorted(u["spec"]["email"] for u in before.values()) == sorted(e for e, _, _ in rows)
    assert any(u["spec"].get("displayName") == "Bob Jönes" for u in before.values())

    second = gatewayctl("users", "import", str(csv_file), "-n", namespace, "--apply")
    assert "0 created, 0 updated, 3 unchanged" in second.stdout
    after = users_in(namespace)
    for name, obj in before.items():
        assert after[name]["metadata"]["generation"] == obj["metadata"]["generation"]

    # drop an alias and move a tier: two updates, and the alias really disappears
    changed = text.replace("Alice Smith", "").replace(
        "imp-charlie@company.com,drafting", "imp-charlie@company.com,coding"
    )
    csv_file.write_bytes(changed.encode("utf-8"))
    third = gatewayctl("users", "import", str(csv_file), "-n", namespace, "--apply")
    assert "0 created, 2 updated, 1 unchanged" in third.stdout
    now = {u["spec"]["email"]: u["spec"] for u in users_in(namespace).values()}
    assert "displayName" not in now["imp-alice@company.com"]
    assert now["imp-charlie@company.com"]["tier"] == "coding"


@pytest.mark.usefixtures("tiers")
def test_import_with_an_invalid_row_applies_nothing(namespace: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("email,tier,alias\nbad-ok@company.com,coding,A\nbad-tier@company.com,platinum,B\n")
    before = set(users_in(namespace))
    result = gatewayctl("users", "import", str(csv_file), "-n", namespace, "--apply", check=False)
    assert result.returncode == 1
    assert f"{csv_file}:3: unknown tier 'platinum'" in result.stderr
    assert "nothing was written or applied" in result.stderr
    assert set(users_in(namespace)) == before


@pytest.mark.usefixtures("tiers")
def test_users_list_shows_status_columns(namespace: str) -> None:
    gatewayctl("users", "add", "--email", "lister@company.com", "--tier", "drafting", "-n", namespace)
    rows = {
        r["email"]: r for r in json.loads(gatewayctl("users", "list", "-n", namespace, "-o", "json").stdout)
    }
    row = rows["lister@company.com"]
    assert row["tier"] == "drafting" and row["namespace"] == namespace
    assert row["budgetUSD"] == 2.0 and row["rpm"] == 10  # from status, or from the tier before the first sync
    everywhere = gatewayctl("users", "list", "-A", "-o", "csv").stdout
    assert f"{namespace},lister-company-com,lister@company.com,drafting" in everywhere
    table = gatewayctl("users", "list", "-n", namespace).stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "EMAIL", "TIER", "SPEND"]


@pytest.mark.usefixtures("tiers")
def test_users_add_wait_reports_the_secret_and_list_the_key_age(
    stack_env: dict[str, str], namespace: str
) -> None:
    if "OPERATOR_HEALTH_URL" not in stack_env:
        pytest.skip("needs the operator (this stack runs without it)")
    done = gatewayctl(
        "users",
        "add",
        "--email",
        "waiter@company.com",
        "--tier",
        "coding",
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "90",
    )
    assert "Ready; the key arrives in Secret" in done.stdout
    rows = {
        r["email"]: r for r in json.loads(gatewayctl("users", "list", "-n", namespace, "-o", "json").stdout)
    }
    row = rows["waiter@company.com"]
    assert row["ready"] == "True" and row["spendUSD"] == 0.0 and row["budgetUSD"] == 20.0
    assert row["keyAge"] is not None and row["secretName"] == "waiter-company-com-llm-key"


@pytest.mark.usefixtures("tiers")
def test_validate_cluster_accepts_cluster_tiers(tmp_path: Path) -> None:
    manifest = tmp_path / "u.yaml"
    manifest.write_text(
        "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayUser\nmetadata: {name: v, namespace: demo}\n"
        "spec: {email: v@company.com, tier: coding}\n"
    )
    offline = gatewayctl("validate", str(manifest), check=False)
    assert offline.returncode == 1 and "tier 'coding' is not defined in these files" in offline.stdout
    assert gatewayctl("validate", "--cluster", str(manifest)).returncode == 0


def test_health_reports_each_part(stack_env: dict[str, str]) -> None:
    result = gatewayctl("health", "-o", "json", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["kubernetes"]["status"] == "OK"
    if "LITELLM_ADMIN_URL" not in stack_env:  # a kube-only stack: LiteLLM cannot be checked
        assert result.returncode == 1 and checks["litellm"]["status"] == "FAIL"
        return
    assert checks["litellm liveness"]["status"] == "OK"
    assert checks["database"]["status"] == "OK", checks["database"]
    assert checks["bedrock route"]["status"] == "OK", checks["bedrock route"]
    if "OPERATOR_HEALTH_URL" in stack_env:
        assert checks["operator"]["status"] == "OK", checks["operator"]
        assert result.returncode == 0, result.stdout
    assert stack_env.get("LITELLM_MASTER_KEY", "unset") not in result.stdout + result.stderr


def _ready_generation(obj: dict[str, Any]) -> int | None:
    """observedGeneration of a True Ready condition, else None."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return int(condition.get("observedGeneration") or (obj.get("status") or {})["observedGeneration"])
    return None


def _batch_csv(tmp_path: Path, prefix: str, tag: str, count: int) -> tuple[Path, list[str]]:
    emails = [f"{prefix}{i}{tag}@company.com" for i in range(1, count + 1)]  # plain: name = email's dashes
    tiers = ["drafting", "coding", "architect"]
    csv_file = tmp_path / f"{prefix}.csv"
    csv_file.write_text(
        "email,tier,alias\n" + "".join(f"{e},{tiers[i % 3]},\n" for i, e in enumerate(emails))
    )
    return csv_file, [e.replace("@", "-").replace(".", "-") for e in emails]


def _needs_operator(stack_env: dict[str, str]) -> None:
    if "OPERATOR_HEALTH_URL" not in stack_env:
        pytest.skip("needs the operator (this stack runs without it)")


@pytest.mark.usefixtures("tiers")
def test_import_in_batches_waits_until_each_batch_is_ready(
    stack_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    _needs_operator(stack_env)
    tag = namespace.removeprefix("gwctl-")
    csv_file, names = _batch_csv(tmp_path, "bat", tag, 7)
    args = ("users", "import", str(csv_file), "-n", namespace, "--apply", "--batch-size", "3")
    first = gatewayctl(*args, "--timeout", "90")
    batch_lines = [line for line in first.stderr.splitlines() if line.startswith("batch ")]
    assert [line.split(":")[0] for line in batch_lines] == ["batch 1/3", "batch 2/3", "batch 3/3"], (
        first.stderr
    )
    assert "3 applied (3 created), Ready in" in batch_lines[0]
    assert "1 applied (1 created), Ready in" in batch_lines[2]
    assert f"7 GatewayUsers in namespace {namespace}: 7 created, 0 updated, 0 unchanged" in first.stdout
    assert "Ready in 3 batch(es) of 3" in first.stdout
    users = users_in(namespace)
    for name in names:  # Ready for the generation applied, right when the command returned
        assert _ready_generation(users[name]) == users[name]["metadata"]["generation"], users[name]
    generations = {name: users[name]["metadata"]["generation"] for name in names}

    again = gatewayctl(*args)
    assert "0 created, 0 updated, 7 unchanged" in again.stdout
    assert again.stderr.count("applied (3 unchanged), Ready in 0 s") == 2, again.stderr
    assert {
        name: u["metadata"]["generation"] for name, u in users_in(namespace).items() if name in names
    } == (generations)


@pytest.mark.usefixtures("tiers")
def test_import_batch_that_cannot_get_ready_stops_before_the_next(
    stack_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    _needs_operator(stack_env)
    tag = namespace.removeprefix("gwctl-")
    csv_file, names = _batch_csv(tmp_path, "blk", tag, 7)
    # someone else's Secret where row 5's key must go: the operator reports SecretConflict (batch 2 of 3)
    k.kubectl("create", "secret", "generic", f"{names[4]}-llm-key", "-n", namespace, "--from-literal=x=y")
    result = gatewayctl(
        "users", "import", str(csv_file), "-n", namespace, "--apply", "--batch-size", "3", check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "batch 1/3: 3 applied (3 created), Ready in" in result.stderr
    assert f"{csv_file}:6: GatewayUser/{namespace}/{names[4]} not Ready: Ready=False SecretConflict" in (
        result.stderr
    )
    assert "batch 2/3 is blocked: 1 of 3 GatewayUsers not Ready (1 SecretConflict)" in result.stderr
    assert "6 of 7 rows applied, 1 not applied" in result.stderr and "re-running is safe" in result.stderr
    for other in (names[3], names[5]):
        assert f"GatewayUser/{namespace}/{other} " not in result.stderr  # only the user not Ready is named
    users = users_in(namespace)
    assert set(names[:6]) <= set(users)
    assert names[6] not in users  # batch 3 never applied

    # the admin deletes that Secret and re-runs: batch 2 waits for the operator's resync, batch 3 follows
    k.kubectl("delete", "secret", f"{names[4]}-llm-key", "-n", namespace)
    again = gatewayctl(
        "users", "import", str(csv_file), "-n", namespace, "--apply", "--batch-size", "3", "--timeout", "100"
    )
    assert (
        "7 GatewayUsers in namespace" in again.stdout and "1 created, 0 updated, 6 unchanged" in again.stdout
    )
    assert _ready_generation(users_in(namespace)[names[6]]) == 1


@pytest.mark.usefixtures("tiers")
def test_import_batch_timeout_names_the_users_and_applies_no_more(
    stack_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    _needs_operator(stack_env)
    tag = namespace.removeprefix("gwctl-")
    csv_file, names = _batch_csv(tmp_path, "tmo", tag, 4)
    # 10 ms: the first LIST comes right after the applies, long before LiteLLM can have made a key
    result = gatewayctl(
        "users",
        "import",
        str(csv_file),
        "-n",
        namespace,
        "--apply",
        "--batch-size",
        "2",
        "--timeout",
        "0.01",
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "batch 1/2 not Ready after 0.01 s: 2 of 2 GatewayUsers not Ready" in result.stderr
    assert "2 of 4 rows applied, 2 not applied" in result.stderr and "raise --timeout" in result.stderr
    for line, name in ((2, names[0]), (3, names[1])):
        assert f"{csv_file}:{line}: GatewayUser/{namespace}/{name} not Ready: " in result.stderr
    users = users_in(namespace)
    assert names[0] in users and names[1] in users
    assert names[2] not in users and names[3] not in users
