"""Update and condition expressions rendered once per shape, then filled with each write's values.

A write's shape is its sequence of actions (kind and attribute path) and its condition.
Building PynamoDB expression objects and serializing them again for every write cost
about as much client CPU as the request itself; here the expression text and the
attribute names are rendered on the first write of a shape and cached, and each write
supplies only its values, in order, as DynamoDB AttributeValues (numbers serialized as
PynamoDB's `NumberAttribute` does, so items read back the same).

A value given twice to one write (the same object) has one placeholder: a task write's
fence appears up to four times, its timestamp twice, and botocore serializes and signs
every AttributeValue (a chain step's transaction carries 12 instead of 22). So the text
is cached per shape and per pattern of shared values (few per shape: which of fence,
attempt and the timestamps coincide).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Act", "Cond", "Do", "Expressions", "attribute_value", "number_text"]


class Do(enum.Enum):
    """What an update action does to its path."""

    SET = "SET"  # path = :value
    REMOVE = "REMOVE"  # the attribute goes away (absent means None in this table)
    ADD = "ADD"  # path + :value (numbers)
    COPY = "COPY"  # path = source
    IF_ABSENT = "IF_ABSENT"  # path = if_not_exists(source, :value)
    PLUS = "PLUS"  # path = source + :value

    # Members are singletons compared by identity: hash them the same way, in C, since every
    # write hashes its shape (about ten actions) to find its rendered expressions.
    __hash__ = object.__hash__


class Act(NamedTuple):
    """One action of an update's shape; `source` names the attribute COPY/IF_ABSENT/PLUS read.

    A tuple, not a dataclass: every write hashes its shape's actions to find its rendered
    text, and a tuple hashes and compares in C."""

    do: Do
    path: tuple[str, ...]
    source: tuple[str, ...] = ()

    @property
    def takes_value(self) -> bool:
        return self.do not in (Do.REMOVE, Do.COPY)


class Cond(enum.Enum):
    """One clause of a condition's shape (clauses are joined with AND)."""

    EXISTS = "attribute_exists({0})"
    ABSENT = "attribute_not_exists({0})"
    EQ = "{0} = {1}"
    NE = "{0} <> {1}"
    #: The fence rule of a task write: `fence < :mine OR (fence = :mine AND attempt = :expected)`;
    #: its path is (fence, attempt) and it takes three values (mine, mine, expected).
    FENCED = "({0} < {1} OR ({0} = {2} AND {3} = {4}))"

    __hash__ = object.__hash__  # as `Do.__hash__`


_COND_VALUES = {Cond.EXISTS: 0, Cond.ABSENT: 0, Cond.EQ: 1, Cond.NE: 1, Cond.FENCED: 3}


def number_text(value: Any) -> str:
    """The text of a number as PynamoDB's `NumberAttribute` writes it (`json.dumps`), with
    the encoder's machinery skipped for ints and finite floats (the same text, a tenth of the CPU)."""
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


def attribute_value(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB AttributeValue; a dict is taken as one already."""
    if isinstance(value, dict):
        return value
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": number_text(value)}
    if isinstance(value, str):
        return {"S": value}
    raise TypeError(f"no DynamoDB attribute value for {type(value).__name__} {value!r}")


@dataclass(frozen=True, slots=True)
class _Rendered:
    update: str | None
    condition: str | None
    names: dict[str, str]
    slots: tuple[tuple[str, int], ...]  # (placeholder, index of its value among those given)
    takes: int  # how many values the shape takes


#: Past this many patterns of shared values for one shape, a new pattern's values share nothing.
_MAX_PATTERNS = 64
_Shape = tuple[tuple[Act, ...], tuple[tuple[Cond, tuple[str, ...]], ...]]


def _sharing(given: Sequence[Any]) -> tuple[int, ...]:
    """For each value, the index of the first value that is the same object: the same
    value and type by construction (a write passes its fence, its clock reading and the
    status strings as the same objects wherever they recur; CPython keeps one object per
    small int)."""
    first: dict[int, int] = {}
    setdefault = first.setdefault
    return tuple([setdefault(k, i) for i, k in enumerate(map(id, given))])


class Expressions:
    """Renders (and caches) the expressions of each shape; `params` fills one write's values."""

    def __init__(self) -> None:
        self._cache: dict[_Shape, dict[tuple[int, ...], _Rendered]] = {}

    @property
    def shapes(self) -> int:
        """How many shapes were rendered (each once per pattern of shared values)."""
        return len(self._cache)

    def params(self, acts: Sequence[Act], values: Sequence[Any],
               condition: Sequence[tuple[Cond, tuple[str, ...]]] = (), cond_values: Sequence[Any] = ()) -> dict[str, Any]:
        """UpdateExpression / ConditionExpression / names / values of one write.

        `values`: one per action that takes a value, in order; `cond_values` likewise for
        the condition's clauses.
        """
        key = (tuple(acts), tuple(condition))
        given = [*values, *cond_values]
        sharing = _sharing(given)
        patterns = self._cache.get(key)
        if patterns is None:
            patterns = self._cache[key] = {}
        rendered = patterns.get(sharing)
        if rendered is None:
            if len(patterns) >= _MAX_PATTERNS:  # an unusual shape: stop caching new patterns
                sharing = tuple(range(len(given)))
                rendered = patterns.get(sharing)
            if rendered is None:
                rendered = _render(key[0], key[1], sharing)
                if len(given) != rendered.takes:
                    raise ValueError(f"the shape takes {rendered.takes} values, {len(given)} were given")
                patterns[sharing] = rendered
        out: dict[str, Any] = {}
        if rendered.update is not None:
            out["UpdateExpression"] = rendered.update
        if rendered.condition is not None:
            out["ConditionExpression"] = rendered.condition
        if rendered.names:
            out["ExpressionAttributeNames"] = rendered.names
        if given:
            filled: dict[str, Any] = {}
            for slot, i in rendered.slots:
                v = given[i]
                filled[slot] = {"S": v} if type(v) is str else attribute_value(v)  # strings: most values
            out["ExpressionAttributeValues"] = filled
        return out


def _render(acts: tuple[Act, ...], condition: tuple[tuple[Cond, tuple[str, ...]], ...],
            sharing: tuple[int, ...]) -> _Rendered:
    """The text of a shape whose i-th value uses the placeholder of value `sharing[i]`
    (`sharing` may be shorter or longer than the shape takes: `params` then refuses it)."""
    names: dict[str, str] = {}
    slots: list[tuple[str, int]] = []
    taken = 0

    def name(segment: str) -> str:
        for placeholder, known in names.items():
            if known == segment:
                return placeholder
        placeholder = f"#n{len(names)}"
        names[placeholder] = segment
        return placeholder

    def path(p: tuple[str, ...]) -> str:
        return ".".join(name(s) for s in p)

    def value() -> str:
        nonlocal taken
        index = sharing[taken] if taken < len(sharing) else taken
        taken += 1
        if index == taken - 1:  # not given before: a placeholder of its own
            slots.append((f":v{len(slots)}", index))
        return next(slot for slot, i in slots if i == index)

    sets: list[str] = []
    removes: list[str] = []
    adds: list[str] = []
    for act in acts:
        target = path(act.path)
        if act.do is Do.SET:
            sets.append(f"{target} = {value()}")
        elif act.do is Do.REMOVE:
            removes.append(target)
        elif act.do is Do.ADD:
            adds.append(f"{target} {value()}")
        elif act.do is Do.COPY:
            sets.append(f"{target} = {path(act.source)}")
        elif act.do is Do.IF_ABSENT:
            sets.append(f"{target} = if_not_exists({path(act.source)}, {value()})")
        else:
            sets.append(f"{target} = {path(act.source)} + {value()}")
    clauses = [("SET", sets), ("REMOVE", removes), ("ADD", adds)]
    update = " ".join(f"{word} {', '.join(parts)}" for word, parts in clauses if parts) or None
    rendered_conds: list[str] = []
    for cond, p in condition:
        if cond is Cond.FENCED:
            fence, attempt = name(p[0]), name(p[1])
            mine, same, expected = value(), value(), value()
            rendered_conds.append(cond.value.format(fence, mine, same, attempt, expected))
        else:
            args = [path(p)] + [value() for _ in range(_COND_VALUES[cond])]
            rendered_conds.append(cond.value.format(*args))
    return _Rendered(update, " AND ".join(rendered_conds) or None, names, tuple(slots), taken)
