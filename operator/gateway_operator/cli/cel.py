"""Kubernetes `x-kubernetes-validations` CEL rules evaluated offline with cel-python.

Kubernetes' CEL environment differs from plain CEL in ways that matter for CRD rules; this module
closes the gaps that real rules hit: values are typed by the schema (a `number` field holding 20 is a
double), numbers of different types compare (cel-go's CrossTypeNumericComparisons, which Kubernetes
enables), and the common string/list library functions exist. Transition rules (`oldSelf`) cannot be
checked without the stored object and are skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
from celpy import celtypes, evaluation
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

_NUMBER_TYPES = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    """A JSON value as a CEL value, typed the way the API server types it from the schema."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if schema.get("type") == "number":
            return celtypes.DoubleType(value)
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType([to_cel(item, items) for item in value])
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        converted = celtypes.MapType()
        for key, item in value.items():
            sub = properties.get(key) or (additional if isinstance(additional, dict) else None)
            converted[celtypes.StringType(key)] = to_cel(item, sub)
        return converted
    return json_to_cel(value)


def _cross_numeric(
    name: str, original: Callable[[Any, Any], Any], compare: Callable[[float, float], bool]
) -> Callable[[Any, Any], Any]:
    def operator(left: Any, right: Any) -> Any:
        if (
            isinstance(left, _NUMBER_TYPES)
            and isinstance(right, _NUMBER_TYPES)
            and type(left) is not type(right)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        ):
            return celtypes.BoolType(compare(float(left), float(right)))
        return original(left, right)

    operator.__name__ = name
    return operator


def _string_fn(transform: Callable[[str], str]) -> Callable[[Any], Any]:
    def function(value: Any) -> Any:
        return celtypes.StringType(transform(str(value)))

    return function


def _split(value: Any, separator: Any) -> Any:
    return celtypes.ListType([celtypes.StringType(part) for part in str(value).split(str(separator))])


def _join(items: Any, separator: Any = "") -> Any:
    return celtypes.StringType(str(separator).join(str(item) for item in items))


def _is_sorted(items: Any) -> Any:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_<_": _cross_numeric("lt", evaluation.bool_lt, lambda a, b: a < b),
    "_<=_": _cross_numeric("le", evaluation.bool_le, lambda a, b: a <= b),
    "_>_": _cross_numeric("gt", evaluation.bool_gt, lambda a, b: a > b),
    "_>=_": _cross_numeric("ge", evaluation.bool_ge, lambda a, b: a >= b),
    "_==_": _cross_numeric("eq", evaluation.bool_eq, lambda a, b: a == b),
    "_!=_": _cross_numeric("ne", evaluation.bool_ne, lambda a, b: a != b),
    "lowerAscii": _string_fn(str.lower),
    "upperAscii": _string_fn(str.upper),
    "trim": _string_fn(str.strip),
    "split": _split,
    "join": _join,
    "isSorted": _is_sorted,
}


@dataclass(frozen=True)
class RuleOutcome:
    passed: bool
    message: str
    checkable: bool = True


@cache
def _environment() -> celpy.Environment:
    return celpy.Environment()  # builds the CEL parser: ~1 s, so only when a rule is evaluated


@cache
def _program(expression: str) -> celpy.Runner:
    env = _environment()
    return env.program(env.compile(expression), functions=FUNCTIONS)


def is_transition_rule(rule: dict[str, Any]) -> bool:
    return "oldSelf" in str(rule.get("rule", ""))


def evaluate_rule(rule: dict[str, Any], value: Any, schema: dict[str, Any]) -> RuleOutcome:
    """Evaluate one x-kubernetes-validations entry against the value at its schema node."""
    expression = str(rule.get("rule", ""))
    activation = {"self": to_cel(value, schema)}
    try:
        result = _program(expression).evaluate(activation)
    except CELParseError as error:
        return RuleOutcome(False, f"rule {expression!r} does not parse: {error}", checkable=False)
    except CELEvalError as error:
        return _evaluation_error(expression, error)
    if isinstance(result, CELEvalError):
        return _evaluation_error(expression, result)
    if bool(result):
        return RuleOutcome(True, "")
    return RuleOutcome(False, _message(rule, activation))


def _evaluation_error(expression: str, error: Exception) -> RuleOutcome:
    text = str(error.args[0]) if error.args else str(error)
    if "undeclared reference" in text or "no matching overload" in text:
        # A library function cel-python lacks: say so instead of failing the manifest.
        return RuleOutcome(False, f"rule {expression!r} cannot be checked offline ({text})", checkable=False)
    return RuleOutcome(False, f"rule {expression!r} failed to evaluate: {text}")


def _message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    message_expression = rule.get("messageExpression")
    if isinstance(message_expression, str):
        try:
            return str(_program(message_expression).evaluate(activation))
        except (CELParseError, CELEvalError):
            pass
    message = rule.get("message")
    if isinstance(message, str) and message:
        return message
    return f"failed rule: {rule.get('rule')}"
