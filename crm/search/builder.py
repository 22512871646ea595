"""The filter builder's state: what the point-and-click builder on the client list shows,
read from its form, turned into a filter tree, and built back from one.

Shape: a root group (AND or OR, optionally NOT) holding conditions and groups; a group
holds conditions only (one level of nesting). Any condition or group can be negated. A
tree of another shape (deeper nesting, NOT NOT) cannot be shown; the text query keeps it.

The state travels in the builder's form inputs, named by position: `r` is the root,
`r.2` its third item, `r.2.0` the first condition of that group; each node has
`<path>.kind` (`cond` or `group`), a group `<path>.join` and `<path>.not`, a condition
`<path>.field`, `.op`, `.value` (or `.values` for a multi-select, `.lines` for a list
typed one per line, `.mode` for how a date is given) and `.was` (the field it had
before, so a new field starts with a fresh operator and value). Incomplete conditions
(no field, no value yet) stay in the builder but not in the query.

Values are checked exactly as the text language checks them (crm.search.fields.
check_condition): a builder condition is a query condition. Checkbox values are written
as 1 and 0 (so the builder writes `"Contract" < 1`, as people read it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm.search.errors import QueryError
from crm.search.fields import ALLOWED_OPS, OP_ORDER, Catalog, SearchField, ValueType, resolve
from crm.search.fields import check_condition as check_field_condition
from crm.search.parser import MAX_LIST, MAX_TERMS, NUMBER, Token, literal, parse
from crm.search.printer import value_text
from crm.search.tree import (
    MAX_RELATIVE_DAYS,
    And,
    Condition,
    Node,
    Not,
    Op,
    Or,
    RelativeDate,
    Scalar,
    Text,
    to_dict,
)

# The free-text term (the quick search) as a builder "field".
TEXT_REF = "_text"
ROOT = "r"
# A path is the root, an item of it, or a condition in a group of it.
PATH = re.compile(r"r(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?")
# The synced marker of a builder whose text query it could not show.
TEXT_ONLY = "!"

JOINS = ("and", "or")
DATE_MODES = ("date", "ago", "ahead", "today")


class MultiDict(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def getlist(self, key: str) -> list[Any]: ...
    def __iter__(self) -> Iterator[str]: ...


@dataclass
class Row:
    """One condition (or free-text term) as the builder shows it."""

    ref: str = ""
    op: str = ""
    value: str = ""
    values: list[str] = field(default_factory=list)  # a multi-select (IN on choices)
    lines: str = ""  # IN on anything else: one value per line
    mode: str = "date"  # how a date is given: date | ago | ahead | today
    negated: bool = False
    error: str | None = None
    fresh: bool = False  # just added: the field select takes the focus

    kind = "cond"


@dataclass
class Group:
    join: str = "and"
    negated: bool = False
    items: list[Row | Group] = field(default_factory=list)
    fresh: bool = False

    kind = "group"


class NotRepresentable(Exception):
    """A tree the builder cannot show; the message says why, for a person."""


# --- widgets and labels ----------------------------------------------------------------


def widget(search_field: SearchField | None, op: str) -> str:
    """Which value input a condition needs: none, text, number, date, checkbox, choice,
    multi (a multi-select) or lines (a list typed one value per line)."""
    if search_field is None or not op or op in (Op.EMPTY.value, Op.NOT_EMPTY.value):
        return "none"
    kind = search_field.value_type
    if op == Op.IN.value:
        if kind in (ValueType.CHOICE, ValueType.MULTI, ValueType.CHECKBOX):
            return "multi"
        return "lines"
    if kind == ValueType.CHECKBOX:
        return "checkbox"
    if kind in (ValueType.CHOICE, ValueType.MULTI) and op != Op.CONTAINS.value:
        return "choice"
    if kind == ValueType.NUMBER:
        return "number"
    if kind in (ValueType.DATE, ValueType.TIMESTAMP):
        return "date"
    return "text"


TEXT_FIELD = SearchField(
    ref=TEXT_REF,
    label="",
    value_type=ValueType.TEXT,
    kind="text",
    column="search_text",
)

OP_LABELS: dict[Op, Any] = {
    Op.EQ: _l("is (=)"),
    Op.NE: _l("is not (!=)"),
    Op.LT: _l("less than (<)"),
    Op.LE: _l("at most (<=)"),
    Op.GT: _l("more than (>)"),
    Op.GE: _l("at least (>=)"),
    Op.CONTAINS: _l("contains (~)"),
    Op.IN: _l("is one of (IN)"),
    Op.EMPTY: _l("is empty"),
    Op.NOT_EMPTY: _l("is not empty"),
}
DATE_OP_LABELS: dict[Op, Any] = {
    Op.EQ: _l("on (=)"),
    Op.NE: _l("not on (!=)"),
    Op.LT: _l("before (<)"),
    Op.LE: _l("on or before (<=)"),
    Op.GT: _l("after (>)"),
    Op.GE: _l("on or after (>=)"),
}
MULTI_OP_LABELS: dict[Op, Any] = {
    Op.EQ: _l("has (=)"),
    Op.NE: _l("has others, not this (!=)"),
    Op.IN: _l("has any of (IN)"),
}


def operators(search_field: SearchField | None) -> list[tuple[str, str]]:
    """(operator, label) pairs that fit a field, in the usual order."""
    if search_field is None:
        return []
    if search_field.ref == TEXT_REF:
        return [(Op.CONTAINS.value, _("contains the words"))]
    kind = search_field.value_type
    allowed = ALLOWED_OPS[kind]
    labels = dict(OP_LABELS)
    if kind in (ValueType.DATE, ValueType.TIMESTAMP):
        labels.update(DATE_OP_LABELS)
    elif kind == ValueType.MULTI:
        labels.update(MULTI_OP_LABELS)
    return [(op.value, str(labels[op])) for op in OP_ORDER if op in allowed]


def field_for(ref: str, catalog: Catalog) -> SearchField | None:
    """The field a row names, if it may be used (archived fields may not)."""
    if ref == TEXT_REF:
        return TEXT_FIELD
    found = catalog.get(ref)
    if found is None or found.archived:
        return None
    return found


def choices_for(search_field: SearchField | None) -> list[tuple[str, str]]:
    """(value, label) options of a choice, multi-select or checkbox input."""
    if search_field is None:
        return []
    if search_field.value_type == ValueType.CHECKBOX:
        return [("1", _("yes (1)")), ("0", _("no (0)"))]
    return [(c, c) for c in search_field.choices]


# --- form -> state ---------------------------------------------------------------------


def _path_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in path.split(".")[1:])


def _default_op(search_field: SearchField) -> str:
    ops = operators(search_field)
    return ops[0][0] if ops else ""


def _read_row(form: MultiDict, path: str, catalog: Catalog) -> Row:
    ref = str(form.get(f"{path}.field", "") or "")
    search_field = field_for(ref, catalog)
    if search_field is None:
        ref = ""
    row = Row(ref=ref, negated=form.get(f"{path}.not") == "1")
    if search_field is None:
        return row
    was = str(form.get(f"{path}.was", "") or "")
    op = str(form.get(f"{path}.op", "") or "")
    if ref != was:
        # A new field starts afresh: the first operator that fits it, no value.
        row.op = _default_op(search_field)
        return row
    row.op = op if op in dict(operators(search_field)) else _default_op(search_field)
    row.value = str(form.get(f"{path}.value", "") or "")[:500]
    row.values = [str(v)[:500] for v in form.getlist(f"{path}.values")][:MAX_LIST]
    row.lines = str(form.get(f"{path}.lines", "") or "")[:5000]
    mode = form.get(f"{path}.mode", "date")
    row.mode = mode if mode in DATE_MODES else "date"
    # Switching between one value and a list keeps what was entered.
    kind = widget(search_field, row.op)
    if kind == "date" and not _fits_mode(row.mode, row.value):
        row.value = ""  # a date left over after switching to "days ago", or the reverse
    if kind == "multi" and not row.values:
        row.values = [v for v in (row.value, *row.lines.splitlines()) if v.strip()][:MAX_LIST]
    elif kind == "lines" and not row.lines.strip():
        row.lines = row.value or "\n".join(row.values)
    elif kind not in ("multi", "lines", "none") and not row.value:
        first = row.values or [line for line in row.lines.splitlines() if line.strip()]
        row.value = first[0].strip() if first else ""
    return row


def _fits_mode(mode: str, value: str) -> bool:
    if mode in ("ago", "ahead"):
        return value.strip().isdigit()
    if mode == "date":
        try:
            date.fromisoformat(value.strip())
        except ValueError:
            return False
    return True


def _read_group(form: MultiDict, path: str, children: list[str], catalog: Catalog) -> Group:
    join = form.get(f"{path}.join", "and")
    group = Group(join=join if join in JOINS else "and", negated=form.get(f"{path}.not") == "1")
    for child in children:
        group.items.append(_read_row(form, child, catalog))
    return group


def from_form(form: MultiDict, catalog: Catalog) -> Group:
    """The builder state its form describes. Unknown or malformed inputs are ignored:
    the form comes from the browser."""
    kinds: dict[str, str] = {}
    for key in form:
        if not isinstance(key, str) or not key.endswith(".kind"):
            continue
        path = key[: -len(".kind")]
        if PATH.fullmatch(path):
            kinds[path] = form.get(key)
    top = sorted((p for p in kinds if p.count(".") == 1), key=_path_key)
    root = Group(
        join=form.get(f"{ROOT}.join") if form.get(f"{ROOT}.join") in JOINS else "and",
        negated=form.get(f"{ROOT}.not") == "1",
    )
    rows = 0
    for path in top:
        if rows >= MAX_TERMS:
            break
        if kinds[path] == "group":
            children = sorted(
                (
                    p
                    for p in kinds
                    if p.startswith(path + ".") and p.count(".") == 2 and kinds[p] == "cond"
                ),
                key=_path_key,
            )[: MAX_TERMS - rows]
            root.items.append(_read_group(form, path, children, catalog))
            rows += len(children)
        elif kinds[path] == "cond":
            root.items.append(_read_row(form, path, catalog))
            rows += 1
    return root


def all_rows(group: Group) -> list[Row]:
    out: list[Row] = []
    for item in group.items:
        out.extend(all_rows(item) if isinstance(item, Group) else [item])
    return out


def count_rows(group: Group) -> int:
    return len(all_rows(group))


def apply_action(root: Group, action: str) -> None:
    """A button of the builder: add:<group path>, group, remove:<path>, clear."""
    verb, _sep, path = action.partition(":")
    if verb == "clear":
        root.items.clear()
        return
    if verb in ("add", "group") and count_rows(root) >= MAX_TERMS:
        return
    if verb == "group":
        other = "or" if root.join == "and" else "and"
        root.items.append(Group(join=other, items=[Row(fresh=True)], fresh=True))
        return
    if not PATH.fullmatch(path or ""):
        return
    indexes = _path_key(path)
    if verb == "add":
        if not indexes:
            root.items.append(Row(fresh=True))
        elif len(indexes) == 1 and indexes[0] < len(root.items):
            target = root.items[indexes[0]]
            if isinstance(target, Group):
                target.items.append(Row(fresh=True))
        return
    if verb == "remove" and indexes:
        if len(indexes) == 1 and indexes[0] < len(root.items):
            del root.items[indexes[0]]
        elif len(indexes) == 2 and indexes[0] < len(root.items):
            target = root.items[indexes[0]]
            if isinstance(target, Group) and indexes[1] < len(target.items):
                del target.items[indexes[1]]


# --- state -> tree ---------------------------------------------------------------------


def _number(raw: str) -> Scalar:
    text = raw.strip()
    if not NUMBER.fullmatch(text):
        raise QueryError(_("Enter a number such as 12,5."))
    return literal(Token("WORD", text, 0, len(text)))


def _date(row: Row) -> Scalar:
    if row.mode == "today":
        return RelativeDate(0)
    if row.mode in ("ago", "ahead"):
        raw = row.value.strip()
        if not raw.isdigit() or int(raw) > MAX_RELATIVE_DAYS:
            raise QueryError(
                _("Enter a number of days from 0 to %(n)s.", n=f"{MAX_RELATIVE_DAYS:,}")
            )
        return RelativeDate(-int(raw) if row.mode == "ago" else int(raw))
    try:
        return date.fromisoformat(row.value.strip())
    except ValueError:
        raise QueryError(_("Enter a date such as 2026-01-31.")) from None


def _line_value(search_field: SearchField, line: str) -> Scalar:
    kind = search_field.value_type
    if kind == ValueType.NUMBER:
        return _number(line)
    if kind in (ValueType.DATE, ValueType.TIMESTAMP):
        word = line.strip()
        try:
            value = literal(Token("WORD", word, 0, len(word)))
        except QueryError:
            value = None
        if not isinstance(value, date | RelativeDate):
            raise QueryError(_("Write one date per line: 2026-01-31, -30d or today."))
        return value
    return line.strip()


def _row_values(row: Row, search_field: SearchField) -> Scalar | tuple[Scalar, ...] | None:
    """The condition's value from the row's inputs; None while it is incomplete."""
    kind = widget(search_field, row.op)
    if kind == "none":
        return None
    if kind == "multi":
        allowed = dict(choices_for(search_field))
        picked = [v for v in row.values if v in allowed]
        if not picked:
            return None
        if search_field.value_type == ValueType.CHECKBOX:
            return tuple(int(v) for v in picked)
        return tuple(picked)
    if kind == "lines":
        lines = [line for line in row.lines.splitlines() if line.strip()]
        if not lines:
            return None
        if len(lines) > MAX_LIST:
            raise QueryError(_("A list holds at most %(n)s values.", n=MAX_LIST))
        return tuple(_line_value(search_field, line) for line in lines)
    if kind == "date":
        if row.mode != "today" and not row.value.strip():
            return None
        return _date(row)
    if not row.value.strip():
        return None
    if kind == "checkbox":
        return 1 if row.value == "1" else 0
    if kind == "number":
        return _number(row.value)
    if kind == "choice" and row.value not in search_field.choices:
        return None
    return row.value.strip()


def row_node(row: Row, catalog: Catalog) -> Node | None:
    """The row as a tree node, or None while incomplete; a value that does not fit sets
    row.error (shown next to the row) and leaves the row out."""
    search_field = field_for(row.ref, catalog)
    if search_field is None or not row.op:
        return None
    row.error = None
    try:
        value = _row_values(row, search_field)
        op = Op(row.op)
        if value is None and op not in (Op.EMPTY, Op.NOT_EMPTY):
            return None
        if row.ref == TEXT_REF:
            node: Node = Text(str(value))
        else:
            if op == Op.IN and not isinstance(value, tuple):
                return None
            cond = Condition(row.ref, op, value)
            check_field_condition(search_field, cond)
            node = cond
    except QueryError as error:
        row.error = error.message
        return None
    return Not(node) if row.negated else node


def group_node(group: Group, catalog: Catalog) -> Node | None:
    children = []
    for item in group.items:
        node = group_node(item, catalog) if isinstance(item, Group) else row_node(item, catalog)
        if node is not None:
            children.append(node)
    if not children:
        return None
    if len(children) == 1:
        node = children[0]
    else:
        node = And(tuple(children)) if group.join == "and" else Or(tuple(children))
    return Not(node) if group.negated else node


def to_tree(root: Group, catalog: Catalog) -> Node | None:
    """The filter tree of the builder: complete conditions only."""
    return group_node(root, catalog)


def synced_marker(node: Node | None) -> str:
    """What the builder's hidden `synced` input holds: the tree the text shows (its JSON
    form, so any change is noticed), or '' for no query."""
    if node is None:
        return ""
    return json.dumps(to_dict(node), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- tree -> state ---------------------------------------------------------------------


def _text_of(value: Scalar, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise NotRepresentable(_("a value the builder cannot show"))
    if value != value.strip() or not value or (multiline and "\n" in value):
        raise NotRepresentable(_("a value with spaces at its ends or across lines"))
    return value


def _row_from(node: Node, catalog: Catalog) -> Row:
    negated = isinstance(node, Not)
    leaf = node.child if isinstance(node, Not) else node
    if isinstance(leaf, Text):
        return Row(ref=TEXT_REF, op=Op.CONTAINS.value, value=_text_of(leaf.text), negated=negated)
    if not isinstance(leaf, Condition):
        raise NotRepresentable(_("NOT in front of NOT"))
    search_field = field_for(leaf.field, catalog)
    if search_field is None:
        raise NotRepresentable(_("a field that is archived or unknown"))
    row = Row(ref=leaf.field, op=leaf.op.value, negated=negated)
    kind = widget(search_field, row.op)
    values = leaf.values
    if kind == "multi":
        if len(set(values)) != len(values):
            raise NotRepresentable(_("a list that names a value twice"))
        if search_field.value_type == ValueType.CHECKBOX:
            row.values = ["1" if v is True or v == 1 else "0" for v in values]
        else:
            row.values = [_text_of(v) for v in values]
    elif kind == "lines":
        if search_field.value_type in (ValueType.NUMBER, ValueType.DATE, ValueType.TIMESTAMP):
            row.lines = "\n".join(value_text(v) for v in values)
        else:
            row.lines = "\n".join(_text_of(v, multiline=True) for v in values)
    elif kind == "checkbox":
        row.value = "1" if values[0] is True or values[0] == 1 else "0"
    elif kind == "number":
        row.value = value_text(values[0])
    elif kind == "date":
        value = values[0]
        if isinstance(value, RelativeDate):
            row.mode = "today" if value.days == 0 else ("ago" if value.days < 0 else "ahead")
            row.value = str(abs(value.days)) if value.days else ""
        elif isinstance(value, date):
            row.value = value.isoformat()
    elif kind in ("text", "choice"):
        row.value = _text_of(values[0])
    return row


def _is_group(node: Node) -> bool:
    inner = node.child if isinstance(node, Not) else node
    return isinstance(inner, And | Or)


def _group_from(node: Node, catalog: Catalog, nested: bool) -> Group:
    negated = isinstance(node, Not)
    inner = node.child if isinstance(node, Not) else node
    assert isinstance(inner, And | Or)
    group = Group(join="and" if isinstance(inner, And) else "or", negated=negated)
    for child in inner.children:
        if _is_group(child):
            if nested:
                raise NotRepresentable(_("groups nested more than one level deep"))
            group.items.append(_group_from(child, catalog, nested=True))
        else:
            group.items.append(_row_from(child, catalog))
    return group


def from_tree(node: Node | None, catalog: Catalog) -> Group:
    """The builder state showing a (resolved) tree; NotRepresentable if it cannot."""
    if node is None:
        return Group()
    if _is_group(node):
        return _group_from(node, catalog, nested=False)
    return Group(items=[_row_from(node, catalog)])


@dataclass
class BuilderView:
    """What the builder template needs: the state, and why a text query is not shown."""

    root: Group
    synced: str
    notice: str | None = None

    @property
    def has_conditions(self) -> bool:
        """Whether it shows more than the quick search (then the page opens it)."""
        return any(row.ref and row.ref != TEXT_REF for row in all_rows(self.root))


def from_query(text: str, catalog: Catalog) -> BuilderView:
    """The builder for the text in the search box."""
    try:
        parsed = parse(text)
        node = resolve(parsed, catalog) if parsed is not None else None
    except QueryError:
        return BuilderView(
            Group(),
            TEXT_ONLY,
            _("The search box holds a query with an error; fix it there, or start here."),
        )
    try:
        root = from_tree(node, catalog)
    except NotRepresentable as reason:
        return BuilderView(
            Group(),
            TEXT_ONLY,
            _(
                "The builder cannot show this query (%(reason)s); the search box keeps "
                "it. Building a filter here replaces it.",
                reason=str(reason),
            ),
        )
    return BuilderView(root, synced_marker(node))


def form_values(root: Group) -> dict[str, Any]:
    """The builder's state as the form inputs it renders (for tests and round trips)."""
    out: dict[str, Any] = {f"{ROOT}.kind": "group", f"{ROOT}.join": root.join}
    if root.negated:
        out[f"{ROOT}.not"] = "1"

    def put_row(path: str, row: Row) -> None:
        out.update({f"{path}.kind": "cond", f"{path}.field": row.ref, f"{path}.was": row.ref})
        out.update({f"{path}.op": row.op, f"{path}.value": row.value, f"{path}.mode": row.mode})
        out.update({f"{path}.values": list(row.values), f"{path}.lines": row.lines})
        if row.negated:
            out[f"{path}.not"] = "1"

    for i, item in enumerate(root.items):
        path = f"{ROOT}.{i}"
        if isinstance(item, Group):
            out.update({f"{path}.kind": "group", f"{path}.join": item.join})
            if item.negated:
                out[f"{path}.not"] = "1"
            for j, row in enumerate(item.items):
                if isinstance(row, Row):
                    put_row(f"{path}.{j}", row)
        else:
            put_row(path, item)
    return out


class FormData(dict[str, Any]):
    """A plain dict with the MultiDict methods from_form uses (lists for .values)."""

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        if isinstance(value, list):
            return value[0] if value else default
        return value

    def getlist(self, key: str) -> list[Any]:
        value = super().get(key)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]


def as_form(data: Mapping[str, Any]) -> FormData:
    return FormData(data)
