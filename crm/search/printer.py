"""Filter tree -> canonical query text, which parses back to the same tree.

Canonical means: explicit AND/OR in capitals, parentheses only where precedence needs
them, text values always quoted, names quoted only when they must be, numbers with a
decimal point, yes/no for booleans. With a catalogue, references print as names a
person reads (custom fields by label); without one, as the references themselves.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from crm.search.parser import WORD, keyword
from crm.search.tree import And, Condition, Node, Not, Op, Or, RelativeDate, Scalar, Text

if TYPE_CHECKING:
    from crm.search.fields import Catalog


def quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def name_text(name: str) -> str:
    """A field name or free-text word: bare when it reads back as one word."""
    if name and WORD.fullmatch(name) and keyword(name) is None:
        return name
    return quote(name)


def value_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, RelativeDate):
        if value.days == 0:
            return "today"
        return f"{value.days:+d}d"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same float; Decimal spells
        # it without an exponent (numbers are below 1e15, so repr's digits suffice).
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else f"{text}.0"
    return quote(value)


def _child(node: Node, parent: type, catalog: Catalog | None) -> str:
    """A child in parentheses when the parent's precedence would regroup it."""
    text = to_text(node, catalog)
    needs = isinstance(node, Or) or (isinstance(node, And) and parent is not Or)
    return f"({text})" if needs else text


def to_text(node: Node | None, catalog: Catalog | None = None) -> str:
    if node is None:
        return ""
    if isinstance(node, Text):
        return name_text(node.text)
    if isinstance(node, Condition):
        name = name_text(catalog.display_name(node.field) if catalog else node.field)
        if node.op in (Op.EMPTY, Op.NOT_EMPTY):
            return f"{name} {node.op.value}"
        if node.op == Op.IN:
            return f"{name} IN ({', '.join(value_text(v) for v in node.values)})"
        return f"{name} {node.op.value} {value_text(node.values[0])}"
    if isinstance(node, Not):
        return f"NOT {_child(node.child, Not, catalog)}"
    joiner = " AND " if isinstance(node, And) else " OR "
    return joiner.join(_child(c, type(node), catalog) for c in node.children)
