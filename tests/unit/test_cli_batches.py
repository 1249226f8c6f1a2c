"""`gatewayctl users import --apply --batch-size N`: batches in CSV order, the "done for the generation just
applied" decision, the progress text, the option checks, and the batch loop's API calls (against a fake
Kubernetes that injects the faults: users that never get Ready, conflicts, failed applies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway_operator.cli import batches, cmd_users
from gateway_operator.cli.cmd_users import Batching, _apply_in_batches
from gateway_operator.cli.csvimport import CsvUser
from gateway_operator.cli.errors import CliError
from gateway_operator.cli.main import app

runner = CliRunner()


# ---------------------------------------------------------------- split


def test_split_keeps_csv_order_and_a_short_last_batch() -> None:
    rows = list(range(7))
    assert batches.split(rows, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches.split(rows, 7) == [rows]
    assert batches.split(rows, 100) == [rows]
    assert batches.split(rows, 1) == [[r] for r in rows]
    assert batches.split([], 5) == []
    with pytest.raises(ValueError):
        batches.split(rows, 0)


# ---------------------------------------------------------------- verdict


def user(
    generation: int = 1,
    ready: str | None = "True",
    reason: str = "Provisioned",
    observed: int | None = 1,
    status_observed: int | None = None,
    message: str = "key active",
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready is not None:
        condition: dict[str, Any] = {"type": "Ready", "status": ready, "reason": reason, "message": message}
        if observed is not None:
            condition["observedGeneration"] = observed
        status["conditions"] = [{"type": "Other", "status": "True"}, condition]
    if status_observed is not None:
        status["observedGeneration"] = status_observed
    return {"metadata": {"name": "u", "namespace": "ns", "generation": generation}, "status": status}


def test_ready_for_the_applied_generation_or_a_newer_one_is_done() -> None:
    assert batches.verdict(user(generation=2, observed=2), 2).state == "ready"
    assert batches.verdict(user(generation=3, observed=3), 2).state == "ready"
    assert batches.verdict(user(generation=2, observed=2), 2).done


def test_ready_from_an_older_generation_is_not_done() -> None:
    # an update just applied (generation 2) while the status still says Ready for generation 1
    old = batches.verdict(user(generation=2, observed=1), 2)
    assert (old.state, old.done) == ("waiting", False)
    assert "generation 2 not reconciled yet" in old.detail and "from generation 1" in old.detail
    unknown = batches.verdict(user(generation=2, observed=None), 2)
    assert unknown.state == "waiting" and "unknown generation" in unknown.detail


def test_status_observed_generation_is_used_when_the_condition_has_none() -> None:
    assert batches.verdict(user(generation=2, observed=None, status_observed=2), 2).state == "ready"
    assert batches.verdict(user(generation=2, observed=None, status_observed=1), 2).state == "waiting"


def test_without_an_applied_generation_the_listed_generation_is_the_bar() -> None:
    assert batches.verdict(user(generation=4, observed=4), None).state == "ready"
    assert batches.verdict(user(generation=4, observed=3), None).state == "waiting"


def test_missing_object_or_condition_is_waiting() -> None:
    assert batches.verdict(None, 1).state == "waiting"
    assert "not in the cluster" in batches.verdict(None, 1).detail
    fresh = batches.verdict(user(ready=None), 1)
    assert (fresh.state, fresh.reason) == ("waiting", "NotReconciled")


def test_not_ready_reasons_are_sorted_into_waiting_settled_and_blocked() -> None:
    tier = batches.verdict(user(ready="False", reason="TierNotReady", message="tier x not yet"), 1)
    assert (tier.state, tier.reason) == ("waiting", "TierNotReady")
    assert tier.detail == "Ready=False TierNotReady: tier x not yet"
    assert batches.verdict(user(ready="False", reason="TierNotFound"), 1).state == "waiting"
    assert batches.verdict(user(ready="False", reason="BackendUnavailable"), 1).state == "waiting"
    assert batches.verdict(user(ready="Unknown", reason=""), 1).state == "waiting"
    for reason in ("Suspended", "BudgetExceeded"):
        settled = batches.verdict(user(ready="False", reason=reason), 1)
        assert (settled.state, settled.done) == ("settled", True)
    for reason in ("SecretConflict", "EmailConflict", "InvalidSpec", "KeyConflict"):
        blocked = batches.verdict(user(ready="False", reason=reason), 1)
        assert (blocked.state, blocked.done) == ("blocked", False)
    # a conflict from an older generation may already be fixed by the new spec: still waiting
    assert batches.verdict(user(generation=2, ready="False", reason="SecretConflict"), 2).state == "waiting"


# ---------------------------------------------------------------- text


def test_progress_and_summary_text() -> None:
    counts = {"created": 480, "updated": 0, "unchanged": 20}
    assert (
        batches.batch_line(3, 20, counts, 41.4)
        == "batch 3/20: 500 applied (480 created, 20 unchanged), Ready in 41 s"
    )
    assert "2 provisioned but not Ready by decision" in batches.batch_line(1, 1, counts, 1, settled=2)
    assert batches.counts_text({"created": 0, "updated": 0}) == "nothing"
    pending = [
        batches.Verdict("waiting", "TierNotReady", ""),
        batches.Verdict("waiting", "NotReconciled", ""),
        batches.Verdict("waiting", "NotReconciled", ""),
    ]
    assert batches.reasons_text(pending) == "2 NotReconciled, 1 TierNotReady"
    assert (
        batches.waiting_line(2, 5, 97, 100, 15.2, pending)
        == "batch 2/5: 97/100 Ready after 15 s; waiting on 3 (2 NotReconciled, 1 TierNotReady)"
    )
    assert batches.not_applied_text(6, 7) == "6 of 7 rows applied, 1 not applied"


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "3"], "--batch-size needs --apply"),
        (["--apply", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--apply", "--timeout", "10"], "needs --batch-size"),
        (["--apply", "--batch-size", "2", "--timeout", "0"], "--timeout must be more than 0 seconds"),
    ],
)
def test_batch_options_are_checked_before_anything_is_read(
    tmp_path: Path, args: list[str], message: str
) -> None:
    csv_file = tmp_path / "u.csv"
    csv_file.write_text("email,tier,alias\na@company.com,coding,\n")
    result = runner.invoke(app, ["users", "import", str(csv_file), *args], env={"KUBECONFIG": "/nonexistent"})
    assert result.exit_code == 1, result.output
    assert message in result.output


# ---------------------------------------------------------------- the batch loop, against a fake


class FakeKube:
    """Fault injection: an in-memory namespace whose 'operator' makes a user Ready `polls_to_ready` LISTs
    after its apply, or never (`never`), or reports a conflict (`conflict`). Counts the API calls."""

    def __init__(self, polls_to_ready: int = 1, never: set[str] | None = None) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.polls_to_ready = polls_to_ready
        self.never = never or set()
        self.conflict: set[str] = set()
        self.conflict_until = 10**9  # the LIST after which the conflicts are resolved (someone fixed them)
        self.fail_apply: set[str] = set()
        self.lists = 0
        self.gets = 0
        self.applied: list[str] = []
        self._age: dict[str, int] = {}

    async def apply_generation(self, obj: dict[str, Any], existing: Any = True) -> tuple[str, int | None]:
        name = obj["metadata"]["name"]
        if name in self.fail_apply:
            raise CliError("cannot apply: admission webhook said no", obj=name)
        self.applied.append(name)
        current = self.objects.get(name)
        if current is not None and current["spec"] == obj["spec"]:
            return "unchanged", current["metadata"]["generation"]
        generation = 1 if current is None else current["metadata"]["generation"] + 1
        status = current["status"] if current else {}
        self.objects[name] = {
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": dict(obj["spec"]),
            "status": status,
        }
        self._age[name] = 0
        return ("created" if current is None else "updated"), generation

    async def list_users(self, namespace: str | None) -> list[dict[str, Any]]:
        self.lists += 1
        for name, obj in self.objects.items():
            self._age[name] = self._age.get(name, 0) + 1
            if name in self.never:
                continue
            generation = obj["metadata"]["generation"]
            if name in self.conflict and self.lists <= self.conflict_until:
                obj["status"] = user(generation, "False", "SecretConflict", observed=generation)["status"]
            elif self._age[name] >= self.polls_to_ready:
                obj["status"] = user(generation, observed=generation)["status"]
        return [dict(o) for o in self.objects.values()]

    async def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        self.gets += 1
        return self.objects.get(name)


def rows(count: int) -> list[tuple[CsvUser, dict[str, Any]]]:
    out = []
    for i in range(count):
        name = f"u{i}"
        csv_user = CsvUser(line=i + 2, email=f"{name}@company.com", tier="coding", alias=None, name=name)
        obj = {
            "apiVersion": "llmgateway.io/v1alpha1",
            "kind": "GatewayUser",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"email": f"{name}@company.com", "tier": "coding"},
        }
        out.append((csv_user, obj))
    return out


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_users, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(cmd_users, "BLOCKED_GRACE", 0.05)


def listed(kube: FakeKube) -> dict[tuple[str, str], dict[str, Any]]:
    return {("ns", name): obj for name, obj in kube.objects.items()}


async def test_batches_wait_with_one_list_a_poll_and_no_gets(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(polls_to_ready=2)
    await _apply_in_batches(kube, rows(7), {}, "ns", "u.csv", Batching(3, 5.0))  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert kube.applied == [f"u{i}" for i in range(7)]
    assert kube.gets == 0
    assert kube.lists == 6  # two polls a batch, three batches: never a GET a user
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("batch")] == [
        "batch 1/3",
        "batch 2/3",
        "batch 3/3",
    ]
    assert "batch 3/3: 1 applied (1 created), Ready in" in err
    assert "7 GatewayUsers in namespace ns: 7 created, 0 updated, 0 unchanged; Ready in 3 batch(es)" in out


async def test_rerun_of_ready_users_does_not_poll_at_all(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    await _apply_in_batches(kube, rows(4), {}, "ns", "u.csv", Batching(2, 5.0))  # type: ignore[arg-type]
    lists = kube.lists
    await _apply_in_batches(kube, rows(4), listed(kube), "ns", "u.csv", Batching(2, 5.0))  # type: ignore[arg-type]
    assert kube.lists == lists  # unchanged and already Ready: done without a LIST
    assert "0 created, 0 updated, 4 unchanged" in capsys.readouterr().out


async def test_an_update_waits_for_its_own_generation(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(polls_to_ready=3)
    await _apply_in_batches(kube, rows(1), {}, "ns", "u.csv", Batching(1, 5.0))  # type: ignore[arg-type]
    assert kube.objects["u0"]["status"]["conditions"][1]["observedGeneration"] == 1
    moved = rows(1)
    moved[0][1]["spec"]["tier"] = "architect"
    before = kube.lists
    await _apply_in_batches(kube, moved, listed(kube), "ns", "u.csv", Batching(1, 5.0))  # type: ignore[arg-type]
    # Ready=True for generation 1 was on the object all along; it took the fake's three polls for generation 2
    assert kube.lists - before == 3
    assert "1 updated" in capsys.readouterr().out


async def test_timeout_stops_before_the_next_batch_and_names_the_users(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kube = FakeKube(never={"u4"})
    with pytest.raises(CliError) as caught:
        await _apply_in_batches(kube, rows(7), {}, "ns", "u.csv", Batching(3, 0.2))  # type: ignore[arg-type]
    assert kube.applied == [f"u{i}" for i in range(6)]  # batch 3 (u6) never applied
    message = caught.value.line()
    assert "batch 2/3 not Ready after 0.2 s: 1 of 3 GatewayUsers not Ready (1 NotReconciled)" in message
    assert "6 of 7 rows applied, 1 not applied" in message and "re-running is safe" in message
    err = capsys.readouterr().err
    assert "u.csv:6: GatewayUser/ns/u4 not Ready: no Ready condition yet" in err
    assert "u3" not in err.replace("batch", "")  # only the users not Ready are named


async def test_a_conflict_fails_fast_without_waiting_for_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kube = FakeKube()
    kube.conflict = {"u1"}
    with pytest.raises(CliError) as caught:
        await _apply_in_batches(kube, rows(4), {}, "ns", "u.csv", Batching(2, 60.0))  # type: ignore[arg-type]
    assert "batch 1/2 is blocked: 1 of 2 GatewayUsers not Ready (1 SecretConflict)" in caught.value.line()
    assert "raise --timeout" not in caught.value.line()
    assert kube.applied == ["u0", "u1"]
    assert "GatewayUser/ns/u1 not Ready: Ready=False SecretConflict" in capsys.readouterr().err


async def test_a_failed_apply_stops_after_its_batch(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    kube.fail_apply = {"u3"}
    with pytest.raises(CliError) as caught:
        await _apply_in_batches(kube, rows(6), {}, "ns", "u.csv", Batching(2, 5.0))  # type: ignore[arg-type]
    assert "batch 2/3: 1 of 2 GatewayUsers failed to apply (1 created); 3 of 6 rows applied" in (
        caught.value.line()
    )
    assert kube.applied == ["u0", "u1", "u2"]
    assert "u.csv:5: u3: cannot apply: admission webhook said no" in capsys.readouterr().err


async def test_suspended_users_count_as_done_and_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(never={"u0"})
    kube.objects["u0"] = {
        "metadata": {"name": "u0", "namespace": "ns", "generation": 5},
        "spec": {"email": "u0@company.com", "tier": "coding"},
        "status": user(5, "False", "Suspended", observed=5)["status"],
    }
    await _apply_in_batches(kube, rows(1), listed(kube), "ns", "u.csv", Batching(1, 5.0))  # type: ignore[arg-type]
    _, err = capsys.readouterr()
    assert "(1 provisioned but not Ready by decision" in err
    assert "u.csv:2: GatewayUser/ns/u0 provisioned, not Ready: Ready=False Suspended" in err


async def test_a_conflict_left_from_an_earlier_run_is_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    kube.conflict = {"u1"}
    with pytest.raises(CliError, match="is blocked") as caught:
        await _apply_in_batches(kube, rows(2), {}, "ns", "u.csv", Batching(2, 60.0))  # type: ignore[arg-type]
    assert "re-checks a fixed user at its next resync" in caught.value.line()
    capsys.readouterr()
    # the admin deletes the Secret and re-runs; the operator notices 20 polls later (its resync)
    kube.conflict_until = kube.lists + 20
    await _apply_in_batches(kube, rows(2), listed(kube), "ns", "u.csv", Batching(2, 60.0))  # type: ignore[arg-type]
    assert kube.lists > kube.conflict_until  # waited through the stale conflict (grace is 5 polls)
    assert "0 created, 0 updated, 2 unchanged" in capsys.readouterr().out
