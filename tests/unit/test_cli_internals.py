"""Pure pieces of gatewayctl: CEL the Kubernetes way, the apply no-op decision, the operator verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from gateway_operator.cli.cel import evaluate_rule, is_transition_rule
from gateway_operator.cli.cmd_health import _lagging, _operator_check
from gateway_operator.cli.kube import up_to_date
from gateway_operator.cli.output import money

NUMBER = {"type": "object", "properties": {"budget": {"type": "number"}, "rpm": {"type": "integer"}}}


def test_cel_numbers_are_typed_by_the_schema_and_compare_across_types() -> None:
    # `budget` holds the JSON integer 20 but the schema says number: a double, compared with int literals
    assert evaluate_rule({"rule": "self.budget >= 0"}, {"budget": 20}, NUMBER).passed
    assert evaluate_rule({"rule": "self.budget == 20"}, {"budget": 20}, NUMBER).passed
    assert evaluate_rule({"rule": "self.budget < self.rpm"}, {"budget": 2.5, "rpm": 3}, NUMBER).passed
    failed = evaluate_rule({"rule": "self.budget <= 10", "message": "too much"}, {"budget": 20}, NUMBER)
    assert (failed.passed, failed.message, failed.checkable) == (False, "too much", True)


def test_cel_messages_has_and_kubernetes_library_functions() -> None:
    rule = {
        "rule": "!has(self.tpm) || self.tpm >= self.rpm",
        "messageExpression": "'tpm ' + string(self.tpm)",
    }
    assert evaluate_rule(rule, {"rpm": 5}, NUMBER).passed
    outcome = evaluate_rule(rule, {"rpm": 5, "tpm": 1}, NUMBER)
    assert not outcome.passed and outcome.message == "tpm 1"
    assert evaluate_rule({"rule": "self.lowerAscii() == self"}, "abc", {"type": "string"}).passed
    assert not evaluate_rule({"rule": "self.lowerAscii() == self"}, "aBc", {"type": "string"}).passed
    assert evaluate_rule({"rule": "self.isSorted()"}, [1, 2, 3], {"type": "array"}).passed
    assert not evaluate_rule({"rule": "self.isSorted()"}, [3, 1], {"type": "array"}).passed
    assert evaluate_rule({"rule": "self.split(',').size() == 2"}, "a,b", {"type": "string"}).passed
    assert evaluate_rule({"rule": "size(self.metadata.name) <= 5"}, {"metadata": {"name": "abc"}}, {}).passed


def test_cel_rules_that_cannot_be_checked_offline_are_not_errors() -> None:
    unknown = evaluate_rule({"rule": "self.quantity().isGreaterThan(1)"}, "1Gi", {"type": "string"})
    assert not unknown.passed and not unknown.checkable and "cannot be checked offline" in unknown.message
    assert is_transition_rule({"rule": "self == oldSelf"})
    assert not is_transition_rule({"rule": "self == 'x'"})


def _obj(spec: dict[str, Any], managed: dict[str, Any] | None = None) -> dict[str, Any]:
    fields = (
        [
            {
                "manager": "gatewayctl",
                "operation": "Apply",
                "fieldsV1": {"f:spec": {f"f:{k}": {} for k in managed}},
            }
        ]
        if managed
        else []
    )
    return {"metadata": {"name": "a", "namespace": "n", "managedFields": fields}, "spec": spec}


def test_up_to_date_compares_values_and_fields_we_applied_before() -> None:
    desired = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"email": "a@b.io", "tier": "coding"}}
    # server defaults and fields set by others do not make it stale
    current = _obj({"email": "a@b.io", "tier": "coding", "suspended": False}, {"email": 1, "tier": 1})
    assert up_to_date(current, desired)
    assert not up_to_date(_obj({"email": "a@b.io", "tier": "drafting"}), desired)
    # we set displayName last time and dropped it now: server-side apply must remove it
    dropped = _obj(
        {"email": "a@b.io", "tier": "coding", "displayName": "A"}, {"email": 1, "tier": 1, "displayName": 1}
    )
    assert not up_to_date(dropped, desired)
    # someone else's displayName is theirs to keep
    theirs = _obj({"email": "a@b.io", "tier": "coding", "displayName": "A"}, {"email": 1, "tier": 1})
    assert up_to_date(theirs, desired)
    # numbers: 20 and 20.0 are the same value
    tier = {"metadata": {"name": "t"}, "spec": {"monthlyBudgetUSD": 20}}
    assert up_to_date({"metadata": {"name": "t"}, "spec": {"monthlyBudgetUSD": 20.0}}, tier)


def _cr(generation: int, observed: int | None, age_seconds: float) -> dict[str, Any]:
    created = (datetime.now(UTC) - timedelta(seconds=age_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {} if observed is None else {"observedGeneration": observed}
    return {
        "kind": "GatewayUser",
        "metadata": {"name": f"u{generation}", "generation": generation, "creationTimestamp": created},
        "status": status,
    }


def test_operator_verdict() -> None:
    fresh_unreconciled = _cr(1, None, 5)  # just created: the operator gets a grace period
    stale = _cr(2, 1, 600)
    assert _lagging([fresh_unreconciled, _cr(3, 3, 600)]) == []
    assert _lagging([stale]) == ["GatewayUser/u2"]
    just_edited = _cr(2, 1, 600)
    just_edited["metadata"]["managedFields"] = [{"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}]
    assert _lagging([just_edited]) == []
    deleting = _cr(3, 2, 600)
    deleting["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _lagging([deleting]) == []
    deleting["metadata"]["deletionTimestamp"] = "2020-01-01T00:00:00Z"
    assert _lagging([deleting]) == ["GatewayUser/u3"]
    assert _operator_check(None, [], []).status == "WARN"
    assert _operator_check(None, [], [_cr(1, 1, 600)]).status == "OK"
    assert _operator_check(None, [], [stale]).status == "FAIL"
    down = SimpleNamespace(
        status=SimpleNamespace(ready_replicas=0), metadata=SimpleNamespace(namespace="llm-gateway", name="op")
    )
    up = SimpleNamespace(status=SimpleNamespace(ready_replicas=1), metadata=down.metadata)
    assert _operator_check(None, [down], []).status == "FAIL"
    check = _operator_check(None, [up], [_cr(1, 1, 600)])
    assert check.status == "OK" and "1 ready replica" in check.detail
    unreachable = _operator_check("http://127.0.0.1:9/healthz", [], [])
    assert unreachable.status == "FAIL" and "unreachable" in unreachable.detail


def test_money_shows_fractions_of_a_cent() -> None:
    assert [money(v) for v in (0, 0.000414, 5.5, 1234.5)] == ["$0.00", "$0.0004", "$5.50", "$1,234.50"]
