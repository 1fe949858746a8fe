"""DynamoDB expressions rendered once per shape (orchestrator/store/dynamodb/expressions.py)."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
from pynamodb.attributes import NumberAttribute

from orchestrator.store.dynamodb.expressions import Act, Cond, Do, Expressions, attribute_value, number_text

FENCED = ((Cond.EXISTS, ("PK",)), (Cond.NE, ("status",)), (Cond.FENCED, ("fence", "attempt")))


def test_an_update_renders_each_kind_of_action_with_names_and_values_in_order() -> None:
    acts = [Act(Do.SET, ("status",)), Act(Do.REMOVE, ("output",)), Act(Do.ADD, ("attempt_base",)),
            Act(Do.COPY, ("attempt_base",), ("attempt",)), Act(Do.IF_ABSENT, ("hist", "000001"), ("hist", "000001")),
            Act(Do.PLUS, ("ttl",), ("ttl_seconds",))]
    p = Expressions().params(acts, ["RUNNING", 1, {"S": "entry"}, 60])
    names = {v: k for k, v in p["ExpressionAttributeNames"].items()}
    status, output, base, attempt = names["status"], names["output"], names["attempt_base"], names["attempt"]
    hist, key, ttl, keep = names["hist"], names["000001"], names["ttl"], names["ttl_seconds"]
    assert p["UpdateExpression"] == (
        f"SET {status} = :v0, {base} = {attempt}, {hist}.{key} = if_not_exists({hist}.{key}, :v2), "
        f"{ttl} = {keep} + :v3 REMOVE {output} ADD {base} :v1")
    assert p["ExpressionAttributeValues"] == {":v0": {"S": "RUNNING"}, ":v1": {"N": "1"}, ":v2": {"S": "entry"},
                                              ":v3": {"N": "60"}}


def test_the_fence_condition_of_a_task_write_reads_as_the_rule_says() -> None:
    p = Expressions().params([Act(Do.SET, ("fence",))], [4], FENCED, ["COMPLETED", 3, 5, 1])
    n = {v: k for k, v in p["ExpressionAttributeNames"].items()}
    assert p["ConditionExpression"] == (
        f"attribute_exists({n['PK']}) AND {n['status']} <> :v1 AND "
        f"({n['fence']} < :v2 OR ({n['fence']} = :v3 AND {n['attempt']} = :v4))")


def test_a_value_given_twice_to_one_write_has_one_placeholder() -> None:
    fence, now, completed = 3, 1796133667.25, "COMPLETED"
    p = Expressions().params([Act(Do.SET, ("fence",)), Act(Do.SET, ("updated_at",)), Act(Do.SET, ("ended_at",))],
                             [fence, now, now], FENCED, [completed, fence, fence, 1])
    n = {v: k for k, v in p["ExpressionAttributeNames"].items()}
    assert p["UpdateExpression"] == f"SET {n['fence']} = :v0, {n['updated_at']} = :v1, {n['ended_at']} = :v1"
    assert p["ConditionExpression"] == (
        f"attribute_exists({n['PK']}) AND {n['status']} <> :v2 AND "
        f"({n['fence']} < :v0 OR ({n['fence']} = :v0 AND {n['attempt']} = :v3))")
    assert p["ExpressionAttributeValues"] == {":v0": {"N": "3"}, ":v1": {"N": "1796133667.25"}, ":v2": {"S": "COMPLETED"},
                                              ":v3": {"N": "1"}}


def test_values_equal_across_types_keep_their_own_placeholders() -> None:
    # 1, 1.0 and True are equal in Python and three different values to DynamoDB
    p = Expressions().params([Act(Do.SET, ("a",)), Act(Do.SET, ("b",)), Act(Do.SET, ("c",)), Act(Do.SET, ("d",)),
                              Act(Do.SET, ("e",))], [1, 1.0, True, {"N": "1"}, {"N": "1"}])
    assert p["ExpressionAttributeValues"] == {":v0": {"N": "1"}, ":v1": {"N": "1.0"}, ":v2": {"BOOL": True},
                                              ":v3": {"N": "1"}, ":v4": {"N": "1"}}


def test_a_shape_is_rendered_once_whatever_its_values() -> None:
    exprs = Expressions()
    acts = [Act(Do.SET, ("updated_at",)), Act(Do.SET, ("status",))]
    first = exprs.params(acts, [1.5, "RUNNING"], FENCED, ["COMPLETED", 1, 1, 0])
    second = exprs.params(acts, [2.5, "COMPLETED"], FENCED, ["COMPLETED", 2, 2, 1])
    assert exprs.shapes == 1
    assert (first["ExpressionAttributeValues"][":v0"], second["ExpressionAttributeValues"][":v0"]) == (
        {"N": "1.5"}, {"N": "2.5"})


def test_a_shape_renders_once_per_pattern_of_equal_values() -> None:
    exprs = Expressions()
    acts = [Act(Do.SET, ("fence",)), Act(Do.SET, ("attempt",))]
    same = exprs.params(acts, [2, 2])
    apart = exprs.params(acts, [2, 1])
    assert (same["UpdateExpression"], apart["UpdateExpression"]) == ("SET #n0 = :v0, #n1 = :v0",
                                                                     "SET #n0 = :v0, #n1 = :v1")
    assert exprs.params(acts, [5, 5]) == {**same, "ExpressionAttributeValues": {":v0": {"N": "5"}}}
    assert exprs.shapes == 1


def _written(p: dict[str, Any]) -> dict[str, str]:
    """attribute -> the string a SET-only update writes to it."""
    names, values = p["ExpressionAttributeNames"], p["ExpressionAttributeValues"]
    pairs = [part.split(" = ") for part in p["UpdateExpression"].removeprefix("SET ").split(", ")]
    return {names[n]: values[v]["S"] for n, v in pairs}


def test_a_shape_with_too_many_patterns_still_writes_each_value_where_it_belongs() -> None:
    exprs = Expressions()
    acts = [Act(Do.SET, (f"a{i}",)) for i in range(8)]
    for n in range(70):  # 70 patterns of which of the eight values are one object (past the cache's 64)
        shared = f"shared-{n}"
        values = [shared if (n >> i) & 1 else f"v{i}-{n}" for i in range(8)]
        assert _written(exprs.params(acts, values)) == {f"a{i}": v for i, v in enumerate(values)}


def test_numbers_are_written_as_pynamodb_writes_them() -> None:
    for value in (0, 7, 1796133667.0948365, 0.1):
        assert attribute_value(value) == {"N": NumberAttribute().serialize(value)}  # type: ignore[no-untyped-call]
    assert attribute_value(True) == {"BOOL": True}


def test_number_text_is_pynamodbs_text_for_every_kind_of_number() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    for value in (0, -7, 10**30, 0.1, -2.5e-7, 1e22, 1796133667.0948365, math.inf, -math.inf, Level.HIGH, True):
        assert number_text(value) == NumberAttribute().serialize(value)  # type: ignore[no-untyped-call]
    assert number_text(math.nan) == "NaN"


def test_a_write_with_the_wrong_number_of_values_is_refused() -> None:
    with pytest.raises(ValueError, match="takes 1 values, 2 were given"):
        Expressions().params([Act(Do.SET, ("status",))], ["A", "B"])
