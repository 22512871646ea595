"""What a query can name: the field catalogue, name resolution and type checks.

A SearchField is one searchable thing with a stable reference (`city`, `cf:contract`),
a value type (which operators and values fit) and a `kind` naming the compiler that
turns its conditions into SQL (crm.search.compiler.COMPILERS).

Extension point: consent state and list membership plug in by registering a provider
(register_provider) that returns SearchFields with refs such as `consent:newsletter` or
`list:12`, a value type (usually CHOICE, with the states as choices) and a new kind,
plus a compiler for that kind (crm.search.compiler.register_compiler). The parser,
printer, dict form and type checks need no change.

Name resolution (case, accents, spaces and underscores ignored): core fields first, by
key, English name or label in any shipped language; then custom fields by label or key.
A custom field whose label collides with a core name is written `cf:<key>` (the printer
does this by itself). Archived fields stay in the catalogue, so a query naming one gets
"archived" rather than "unknown".
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache

from flask import has_app_context
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm.fields.models import CustomField, FieldType
from crm.search.errors import QueryError
from crm.search.printer import name_text
from crm.search.tree import (
    COMPARISONS,
    EMPTINESS,
    And,
    Condition,
    Node,
    Not,
    Op,
    Or,
    RelativeDate,
    Scalar,
    Text,
    conditions,
)
from crm.text import fold


class ValueType(enum.StrEnum):
    TEXT = "text"
    PHONE = "phone"
    CHOICE = "choice"
    MULTI = "multi"
    NUMBER = "number"
    DATE = "date"
    CHECKBOX = "checkbox"
    TIMESTAMP = "timestamp"
    TAGS = "tags"
    USER = "user"


_ORDERED = COMPARISONS | {Op.IN}
ALLOWED_OPS: dict[ValueType, frozenset[Op]] = {
    ValueType.TEXT: _ORDERED | {Op.CONTAINS} | EMPTINESS,
    ValueType.PHONE: _ORDERED | {Op.CONTAINS} | EMPTINESS,
    ValueType.CHOICE: _ORDERED | {Op.CONTAINS} | EMPTINESS,
    ValueType.MULTI: frozenset({Op.EQ, Op.NE, Op.IN}) | EMPTINESS,
    ValueType.NUMBER: _ORDERED | EMPTINESS,
    ValueType.DATE: _ORDERED | EMPTINESS,
    # An unticked or missing box is "no": a checkbox is never empty.
    ValueType.CHECKBOX: _ORDERED,
    ValueType.TIMESTAMP: _ORDERED,
    ValueType.TAGS: frozenset({Op.EQ, Op.NE, Op.CONTAINS, Op.IN}) | EMPTINESS,
    ValueType.USER: frozenset({Op.EQ, Op.NE, Op.CONTAINS, Op.IN}) | EMPTINESS,
}
OP_ORDER = [Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.CONTAINS, Op.IN, Op.EMPTY, Op.NOT_EMPTY]

CUSTOM_TYPES: dict[FieldType, ValueType] = {
    FieldType.TEXT: ValueType.TEXT,
    FieldType.LONG_TEXT: ValueType.TEXT,
    FieldType.EMAIL: ValueType.TEXT,
    FieldType.URL: ValueType.TEXT,
    FieldType.PHONE: ValueType.PHONE,
    FieldType.NUMBER: ValueType.NUMBER,
    FieldType.DATE: ValueType.DATE,
    FieldType.CHECKBOX: ValueType.CHECKBOX,
    FieldType.SINGLE_CHOICE: ValueType.CHOICE,
    FieldType.MULTI_CHOICE: ValueType.MULTI,
}


@dataclass(frozen=True)
class SearchField:
    ref: str
    label: str
    value_type: ValueType
    kind: str  # the compiler: core, owner, tags, timestamp, custom (later: consent, list)
    column: str  # Client attribute for core kinds, the JSON key for custom fields
    names: tuple[str, ...] = ()  # further names it answers to
    choices: tuple[str, ...] = ()
    archived: bool = False
    custom: bool = False


@dataclass(frozen=True)
class _Core:
    ref: str
    label: object  # a lazy string
    value_type: ValueType
    kind: str
    column: str
    aliases: tuple[str, ...] = ()


CORE: tuple[_Core, ...] = (
    _Core("first_name", _l("First name"), ValueType.TEXT, "core", "first_name", ("firstname",)),
    _Core("last_name", _l("Last name"), ValueType.TEXT, "core", "last_name", ("surname",)),
    _Core("company", _l("Company"), ValueType.TEXT, "core", "company"),
    _Core("email", _l("Email"), ValueType.TEXT, "core", "email", ("e-mail",)),
    _Core("phone", _l("Phone"), ValueType.PHONE, "core", "phone"),
    _Core("street", _l("Street"), ValueType.TEXT, "core", "street"),
    _Core("postal_code", _l("Postal code"), ValueType.TEXT, "core", "postal_code", ("postcode",)),
    _Core("city", _l("City"), ValueType.TEXT, "core", "city"),
    _Core("country", _l("Country"), ValueType.TEXT, "core", "country"),
    _Core("owner", _l("Owner"), ValueType.USER, "owner", "owner_id"),
    _Core("tags", _l("Tags"), ValueType.TAGS, "tags", "tags", ("tag",)),
    _Core(
        "created", _l("Created"), ValueType.TIMESTAMP, "timestamp", "created_at", ("created_at",)
    ),
    _Core(
        "updated", _l("Updated"), ValueType.TIMESTAMP, "timestamp", "updated_at", ("updated_at",)
    ),
)

# Later domains (consent, mailing lists) add their searchable things here.
PROVIDERS: list[Callable[[], Iterable[SearchField]]] = []


def register_provider(provider: Callable[[], Iterable[SearchField]]) -> None:
    if provider not in PROVIDERS:
        PROVIDERS.append(provider)


@lru_cache(maxsize=4096)  # the same labels and aliases come back on every request
def norm(name: str) -> str:
    """How names are compared: 'Miasto_Łódź ' and 'miasto lodz' are the same name."""
    return " ".join(fold(name).replace("_", " ").split())


@lru_cache(maxsize=8)
def _labels_in(languages: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each core field's label in each language. Switching locales costs milliseconds
    and translations do not change while the process runs, so this is computed once."""
    names: dict[str, list[str]] = {core.ref: [] for core in CORE}
    for language in languages:
        with force_locale(language):
            for core in CORE:
                names[core.ref].append(str(core.label))
    return {ref: tuple(labels) for ref, labels in names.items()}


def core_fields(languages: Iterable[str] = ()) -> list[SearchField]:
    """The core fields, answering to their label in each of `languages` too (so a
    query bookmarked by a Polish user works for a German one)."""
    wanted = tuple(languages)
    # Outside an app there are no translations to look up (and nothing to cache).
    translated = _labels_in(wanted) if wanted and has_app_context() else {}
    out = []
    for core in CORE:
        names = [core.ref, *core.aliases, *translated.get(core.ref, ())]
        out.append(
            SearchField(
                ref=core.ref,
                label=str(core.label),
                value_type=core.value_type,
                kind=core.kind,
                column=core.column,
                names=tuple(names),
            )
        )
    return out


def custom_search_field(field: CustomField) -> SearchField:
    return SearchField(
        ref=f"cf:{field.key}",
        label=field.label,
        value_type=CUSTOM_TYPES[field.type],
        kind="custom",
        column=field.key,
        names=(field.key,),
        choices=tuple(field.choices or ()),
        archived=field.is_archived,
        custom=True,
    )


class Catalog:
    """Every field a query may name, with lookups by reference and by typed name."""

    def __init__(self, fields: Iterable[SearchField]) -> None:
        self.fields = list(fields)
        self.by_ref = {f.ref: f for f in self.fields}
        self._core: dict[str, SearchField] = {}
        self._exact: dict[str, SearchField] = {}
        self._loose: dict[str, list[SearchField]] = {}
        for f in self.fields:
            if not f.custom:
                for name in (f.ref, f.label, *f.names):
                    self._core.setdefault(norm(name), f)
        for f in self.fields:
            if f.custom:
                self._exact.setdefault(f.label.casefold(), f)
                for name in (f.label, *f.names):
                    bucket = self._loose.setdefault(norm(name), [])
                    if f not in bucket:
                        bucket.append(f)

    @classmethod
    def build(cls) -> Catalog:
        """The catalogue for this request: core fields, every custom field (archived
        too) and whatever providers add."""
        from crm import LANGUAGES
        from crm.fields.services import all_fields

        fields = core_fields(LANGUAGES)
        fields += [custom_search_field(f) for f in all_fields()]
        for provider in PROVIDERS:
            fields += list(provider())
        return cls(fields)

    def get(self, ref: str) -> SearchField | None:
        return self.by_ref.get(ref)

    def _find(self, name: str) -> SearchField | list[SearchField] | None:
        """The field a name means; a list when it is ambiguous; None when unknown."""
        if name[:3].lower() == "cf:":
            return self.by_ref.get("cf:" + name[3:].strip().lower())
        if name in self.by_ref:
            return self.by_ref[name]
        key = norm(name)
        if key in self._core:
            return self._core[key]
        if name.casefold() in self._exact:
            return self._exact[name.casefold()]
        matches = self._loose.get(key, [])
        if len(matches) == 1:
            return matches[0]
        return matches or None

    def lookup(self, name: str, position: int | None = None) -> SearchField:
        """The field a typed name means, or a QueryError saying why there is none."""
        found = self._find(name)
        if isinstance(found, list):
            options = ", ".join(f"cf:{f.column}" for f in found)
            raise QueryError(
                _(
                    "“%(name)s” could mean several fields; write one of %(options)s.",
                    name=name,
                    options=options,
                ),
                position,
            )
        if found is None:
            raise QueryError(self._unknown_message(name), position)
        if found.archived:
            raise QueryError(
                _(
                    "The field “%(name)s” is archived; restore it under Custom fields or "
                    "leave it out of the query.",
                    name=found.label,
                ),
                position,
            )
        return found

    def _unknown_message(self, name: str) -> str:
        shown = {
            norm(self.display_name(f.ref)): self.display_name(f.ref)
            for f in self.fields
            if not f.archived
        }
        for f in self.fields:
            if not f.archived and not f.custom:
                shown.setdefault(norm(f.label), f.label)
        close = difflib.get_close_matches(norm(name), list(shown), n=3, cutoff=0.6)
        if close:
            suggestions = ", ".join(f"“{shown[c]}”" for c in close)
            return _(
                "No field named “%(name)s”; did you mean %(suggestions)s?",
                name=name,
                suggestions=suggestions,
            )
        return _("No field named “%(name)s”.", name=name)

    def display_name(self, ref: str) -> str:
        """How a reference is written in query text: core fields by key, custom fields by
        label when the label leads back to the same field, else by `cf:<key>`."""
        field = self.by_ref.get(ref)
        if field is None or not field.custom:
            return ref
        if not field.archived and self._find(field.label) is field:
            return field.label
        return ref


# --- resolution and type checks --------------------------------------------------------


def _type_name(value_type: ValueType) -> str:
    names = {
        ValueType.TEXT: _("text"),
        ValueType.PHONE: _("a phone number"),
        ValueType.CHOICE: _("a choice"),
        ValueType.MULTI: _("a multiple choice"),
        ValueType.NUMBER: _("a number"),
        ValueType.DATE: _("a date"),
        ValueType.CHECKBOX: _("a checkbox"),
        ValueType.TIMESTAMP: _("a date"),
        ValueType.TAGS: _("tags"),
        ValueType.USER: _("a user"),
    }
    return names[value_type]


def _value_hint(field: SearchField) -> str:
    name = field.label
    hints = {
        ValueType.NUMBER: _(
            "“%(name)s” is a number: compare it with a number such as 12,5.", name=name
        ),
        ValueType.DATE: _(
            "“%(name)s” is a date: compare it with a date such as 2026-01-31, -30d or today.",
            name=name,
        ),
        ValueType.CHECKBOX: _(
            "“%(name)s” is a checkbox: compare it with yes/no or 0/1.", name=name
        ),
        ValueType.TAGS: _("“%(name)s” takes tag names in double quotes.", name=name),
        ValueType.USER: _("“%(name)s” takes a user's email or name in double quotes.", name=name),
    }
    hints[ValueType.TIMESTAMP] = hints[ValueType.DATE]
    default = _(
        "“%(name)s” is %(type)s: put the value in double quotes.",
        name=name,
        type=_type_name(field.value_type),
    )
    return hints.get(field.value_type, default)


def _check_op(field: SearchField, cond: Condition) -> None:
    allowed = ALLOWED_OPS[field.value_type]
    if cond.op in allowed:
        return
    if cond.op in EMPTINESS and field.value_type == ValueType.CHECKBOX:
        message = _(
            "“%(name)s” is a checkbox and never empty (an unticked box is no): "
            "compare it with yes/no or 0/1.",
            name=field.label,
        )
    elif cond.op in EMPTINESS:
        message = _("“%(name)s” always has a value.", name=field.label)
    else:
        ops = ", ".join(op.value for op in OP_ORDER if op in allowed)
        message = _(
            "%(op)s does not work on “%(name)s” (%(type)s); use one of %(ops)s.",
            op=cond.op.value,
            name=field.label,
            type=_type_name(field.value_type),
            ops=ops,
        )
    raise QueryError(message, cond.op_pos)


def _check_value(field: SearchField, op: Op, value: Scalar, position: int | None) -> None:
    kind = field.value_type
    if kind == ValueType.NUMBER:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind in (ValueType.DATE, ValueType.TIMESTAMP):
        fits = isinstance(value, RelativeDate | date) and not isinstance(value, datetime)
    elif kind == ValueType.CHECKBOX:
        fits = isinstance(value, bool) or (type(value) is int and value in (0, 1))
    else:
        fits = isinstance(value, str)
    if not fits:
        raise QueryError(_value_hint(field), position)
    if not isinstance(value, str):
        return
    if not value.strip():
        catalog_name = field.label if field.custom else field.ref
        raise QueryError(
            _(
                "Empty text never matches; to find clients without “%(name)s”, write %(query)s.",
                name=field.label,
                query=f"{name_text(catalog_name)} IS EMPTY",
            ),
            position,
        )
    choice = kind in (ValueType.CHOICE, ValueType.MULTI) and op in (Op.EQ, Op.NE, Op.IN)
    if choice and value not in field.choices:
        raise QueryError(
            _(
                "“%(value)s” is not a choice of “%(name)s”; the choices are %(choices)s.",
                value=value,
                name=field.label,
                choices=", ".join(f"“{c}”" for c in field.choices),
            ),
            position,
        )


def check_condition(field: SearchField, cond: Condition) -> None:
    _check_op(field, cond)
    for index, value in enumerate(cond.values):
        _check_value(field, cond.op, value, cond.value_position(index))


def resolve(node: Node, catalog: Catalog) -> Node:
    """The tree with every field name replaced by its reference, after checking that
    each operator and value fits its field. Raises QueryError (with the position)."""
    if isinstance(node, Text):
        return node
    if isinstance(node, Condition):
        field = catalog.lookup(node.field, node.pos)
        check_condition(field, node)
        return replace(node, field=field.ref)
    if isinstance(node, Not):
        return replace(node, child=resolve(node.child, catalog))
    children = tuple(resolve(c, catalog) for c in node.children)
    return And(children) if isinstance(node, And) else Or(children)


@dataclass(frozen=True)
class FieldProblem:
    ref: str
    label: str | None
    archived: bool  # False: the field does not exist (any more)


def field_problems(node: Node | None, catalog: Catalog) -> list[FieldProblem]:
    """References in a stored tree that no longer work: archived or unknown fields
    (saved filters show these instead of failing)."""
    if node is None:
        return []
    problems: dict[str, FieldProblem] = {}
    for cond in conditions(node):
        try:
            catalog.lookup(cond.field)
        except QueryError:
            field = catalog._find(cond.field)
            if isinstance(field, SearchField):
                problems[cond.field] = FieldProblem(cond.field, field.label, field.archived)
            else:
                problems[cond.field] = FieldProblem(cond.field, None, False)
    return list(problems.values())
