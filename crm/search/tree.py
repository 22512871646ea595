"""The filter tree: and/or/not over conditions (field, operator, value) and free-text terms.

Every way of choosing clients (the text query, later the filter builder, saved filters,
mass actions, exports and mailing audiences) is one of these trees. Nodes are frozen
dataclasses, so trees compare by value and hash; source positions ride along for error
messages but take no part in equality.

A condition's `field` is a string. Straight out of the parser it is the name as typed
(`Contract`, `Miasto rodzinne`); after crm.search.fields.resolve it is a stable reference:
a core field's key (`city`, `tags`, `owner`, `created`), `cf:<key>` for a custom field
(the key never changes, so renaming a label keeps stored trees working), and later
`consent:<purpose>` or `list:<id>`. References are valid query text themselves.

The dict form (to_dict/from_dict) is what gets stored: plain JSON types only.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeAlias

from flask_babel import gettext as _

from crm.search.errors import QueryError

MAX_RELATIVE_DAYS = 36_500
# Numbers are stored with |x| < 1e15 (crm.fields.values.parse_number); so are literals.
MAX_NUMBER = 10**15


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    CONTAINS = "~"
    IN = "IN"
    EMPTY = "IS EMPTY"
    NOT_EMPTY = "IS NOT EMPTY"


COMPARISONS = frozenset({Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE})
ORDERING = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})
EMPTINESS = frozenset({Op.EMPTY, Op.NOT_EMPTY})


@dataclass(frozen=True)
class RelativeDate:
    """A day counted from today in the organisation's time zone: -30d, +7d, today."""

    days: int

    def on(self, today: date) -> date:
        return today + timedelta(days=self.days)


# bool before int matters wherever values are told apart: True == 1 in Python.
Scalar: TypeAlias = str | bool | int | float | date | RelativeDate
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class Condition:
    field: str
    op: Op
    value: Value = None
    # Character offsets in the query text; None for a tree that never was text.
    pos: int | None = field(default=None, compare=False, repr=False)
    op_pos: int | None = field(default=None, compare=False, repr=False)
    value_pos: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in EMPTINESS:
            if self.value is not None:
                raise ValueError(f"{self.op} takes no value")
        elif self.op == Op.IN:
            if not isinstance(self.value, tuple) or not self.value:
                raise ValueError("IN takes a non-empty tuple of values")
        elif self.value is None or isinstance(self.value, tuple):
            raise ValueError(f"{self.op} takes one value")

    @property
    def values(self) -> tuple[Scalar, ...]:
        """The value(s) as a tuple: one for a comparison, several for IN, none for IS."""
        if self.value is None:
            return ()
        return self.value if isinstance(self.value, tuple) else (self.value,)

    def value_position(self, index: int) -> int | None:
        if index < len(self.value_pos):
            return self.value_pos[index]
        return self.op_pos


@dataclass(frozen=True)
class Text:
    """A free-text term: matches clients whose folded name, company, email or phone
    contains it (the quick search)."""

    text: str
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.children) < 2:
            raise ValueError("AND needs at least two children")


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.children) < 2:
            raise ValueError("OR needs at least two children")


@dataclass(frozen=True)
class Not:
    child: Node
    pos: int | None = field(default=None, compare=False, repr=False)


Node: TypeAlias = Condition | Text | And | Or | Not


def conditions(node: Node) -> list[Condition]:
    """Every condition in the tree, left to right."""
    if isinstance(node, Condition):
        return [node]
    if isinstance(node, Text):
        return []
    if isinstance(node, Not):
        return conditions(node.child)
    return [c for child in node.children for c in conditions(child)]


# --- dict (JSON) form ------------------------------------------------------------------

MAX_STORED_DEPTH = 64


def _encode(value: Scalar) -> Any:
    if isinstance(value, RelativeDate):
        return {"days": value.days}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    return value


def to_dict(node: Node) -> dict[str, Any]:
    """The tree as JSON-ready data:
    {"and": [...]}, {"or": [...]}, {"not": {...}}, {"text": "anna"},
    {"field": "cf:contract", "op": "<", "value": 1}; IN takes a list; IS EMPTY no value;
    dates are {"date": "2026-01-31"}, relative dates {"days": -30}."""
    if isinstance(node, Condition):
        out: dict[str, Any] = {"field": node.field, "op": node.op.value}
        if node.op == Op.IN:
            out["value"] = [_encode(v) for v in node.values]
        elif node.value is not None:
            out["value"] = _encode(node.values[0])
        return out
    if isinstance(node, Text):
        return {"text": node.text}
    if isinstance(node, Not):
        return {"not": to_dict(node.child)}
    kind = "and" if isinstance(node, And) else "or"
    return {kind: [to_dict(c) for c in node.children]}


def _damaged(detail: str) -> QueryError:
    return QueryError(_("The stored filter is damaged (%(detail)s).", detail=detail))


def _decode(raw: Any) -> Scalar:
    if isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        if (isinstance(raw, float) and not math.isfinite(raw)) or abs(raw) >= MAX_NUMBER:
            raise _damaged("number out of range")
        return raw
    if isinstance(raw, dict) and set(raw) == {"date"} and isinstance(raw["date"], str):
        try:
            return date.fromisoformat(raw["date"])
        except ValueError:
            raise _damaged("bad date") from None
    if isinstance(raw, dict) and set(raw) == {"days"} and type(raw["days"]) is int:
        if abs(raw["days"]) > MAX_RELATIVE_DAYS:
            raise _damaged("relative date out of range")
        return RelativeDate(raw["days"])
    raise _damaged("bad value")


def from_dict(data: Any, depth: int = 0) -> Node:
    """The tree back from to_dict's form; anything malformed raises QueryError."""
    if depth > MAX_STORED_DEPTH:
        raise _damaged("too deeply nested")
    if not isinstance(data, dict) or len(data) == 0:
        raise _damaged("not a node")
    if set(data) <= {"field", "op", "value"} and "field" in data and "op" in data:
        name, op_raw = data["field"], data["op"]
        if not isinstance(name, str) or not name:
            raise _damaged("bad field")
        try:
            op = Op(op_raw)
        except ValueError:
            raise _damaged("unknown operator") from None
        value: Value = None
        if "value" in data:
            raw = data["value"]
            if op == Op.IN:
                if not isinstance(raw, list):
                    raise _damaged("IN needs a list")
                value = tuple(_decode(v) for v in raw)
            else:
                value = _decode(raw)
        try:
            return Condition(name, op, value)
        except ValueError:
            raise _damaged("value does not fit the operator") from None
    if len(data) != 1:
        raise _damaged("unknown node")
    ((kind, inner),) = data.items()
    if kind == "text" and isinstance(inner, str):
        return Text(inner)
    if kind == "not":
        return Not(from_dict(inner, depth + 1))
    if kind in ("and", "or") and isinstance(inner, list) and inner:
        children = tuple(from_dict(c, depth + 1) for c in inner)
        if len(children) == 1:  # a group of one (e.g. from a builder) is that node
            return children[0]
        return And(children) if kind == "and" else Or(children)
    raise _damaged("unknown node")
