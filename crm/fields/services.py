"""Custom field definitions: create, change, reorder, archive. Services flush; the
caller commits."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import Select, func, select

from crm.clients.models import Client
from crm.extensions import db
from crm.fields import indexes
from crm.fields.models import CustomField, FieldType
from crm.fields.values import FieldValueError, as_text, parse_value
from crm.org.services import shared
from crm.sqltypes import utcnow
from crm.text import fold

CHOICE_TYPES = frozenset({FieldType.SINGLE_CHOICE, FieldType.MULTI_CHOICE})


class FieldChangeError(ValueError):
    """A change to a field definition that was refused, with the reason for a person."""


@dataclass
class FieldSpec:
    label: str
    field_type: FieldType
    choices: list[str]
    required: bool = False
    personal_data: bool = True
    show_in_list: bool = False
    help_text: str | None = None


def _active_fields_stmt() -> Select[tuple[CustomField]]:
    return (
        select(CustomField)
        .where(CustomField.archived_at.is_(None))
        .order_by(CustomField.position, CustomField.id)
    )


def active_fields() -> list[CustomField]:
    """The fields in use, in their order: the process's shared copy (crm.org.services.
    shared), for reading. To change fields, load them with active_fields_for_update()."""
    return shared("active_fields", lambda session: list(session.scalars(_active_fields_stmt())))


def active_fields_for_update() -> list[CustomField]:
    return list(db.session.scalars(_active_fields_stmt()))


def all_fields() -> list[CustomField]:
    """Every field, archived ones last: the process's shared copy, for reading (the
    search catalogue builds from it on every list request)."""
    stmt = select(CustomField).order_by(
        CustomField.archived_at.is_not(None), CustomField.position, CustomField.id
    )
    return shared("all_fields", lambda session: list(session.scalars(stmt)))


def clean_choices(raw: str | Sequence[str]) -> list[str]:
    """One choice per line (or a list); blanks and repeats dropped, order kept."""
    items = raw.splitlines() if isinstance(raw, str) else list(raw)
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip()
        if item:
            seen.setdefault(item, None)
    return list(seen)


def make_key(label: str) -> str:
    """A stable slug for the label: 'Umowa podpisana?' -> 'umowa_podpisana'."""
    base = re.sub(r"[^a-z0-9]+", "_", fold(label)).strip("_")[:40] or "field"
    if not base[0].isalpha():
        base = f"f_{base}"[:40]
    taken = set(db.session.scalars(select(CustomField.key).where(CustomField.key.like(f"{base}%"))))
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def _check_label(label: str, field_id: int | None = None) -> str:
    label = label.strip()
    if not label:
        raise FieldChangeError(_("A field needs a label."))
    clash = db.session.scalar(
        select(CustomField).where(func.lower(CustomField.label) == label.lower())
    )
    if clash is not None and clash.id != field_id:
        raise FieldChangeError(_("A field named “%(label)s” exists already.", label=clash.label))
    return label


def create_field(spec: FieldSpec) -> CustomField:
    label = _check_label(spec.label)
    choices = clean_choices(spec.choices)
    if spec.field_type in CHOICE_TYPES and not choices:
        raise FieldChangeError(_("A choice field needs at least one choice."))
    position = (db.session.scalar(select(func.max(CustomField.position))) or 0) + 1
    field = CustomField(
        key=make_key(label),
        label=label,
        field_type=spec.field_type.value,
        choices=choices if spec.field_type in CHOICE_TYPES else [],
        required=spec.required,
        personal_data=spec.personal_data,
        show_in_list=spec.show_in_list,
        help_text=(spec.help_text or "").strip() or None,
        position=position,
    )
    db.session.add(field)
    db.session.flush()
    if field.indexed:
        indexes.create_index(field.key)
    return field


def _clients_with_value(key: str) -> Iterator[Client]:
    stmt = (
        select(Client).where(indexes.value_expr(key).is_not(None)).execution_options(yield_per=500)
    )
    yield from db.session.scalars(stmt)


def _convert_all(field: CustomField, target: CustomField, region: str) -> list[tuple[Client, Any]]:
    """Every stored value converted to `target`'s type and choices, or a refusal that
    says how many values would be lost and shows a few."""
    converted: list[tuple[Client, Any]] = []
    bad: list[str] = []
    for client in _clients_with_value(field.key):
        old = client.custom.get(field.key)
        raw = (
            old if target.type == FieldType.MULTI_CHOICE and isinstance(old, list) else as_text(old)
        )
        if target.type == FieldType.MULTI_CHOICE and isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",")]
        try:
            converted.append((client, parse_value(target, raw, region)))
        except FieldValueError:
            bad.append(as_text(old))
    if bad:
        examples = ", ".join(f"“{b}”" for b in bad[:3])
        raise FieldChangeError(
            _(
                "Refused: %(n)s client values would be lost (for example %(examples)s). "
                "Correct or clear them first.",
                n=len(bad),
                examples=examples,
            )
        )
    return converted


def update_field(field: CustomField, spec: FieldSpec, region: str) -> CustomField:
    """Change label, flags, choices and type. A change that would lose stored values
    (a type they do not convert to, a choice still in use) is refused as a whole."""
    label = _check_label(spec.label, field.id)
    choices = clean_choices(spec.choices) if spec.field_type in CHOICE_TYPES else []
    if spec.field_type in CHOICE_TYPES and not choices:
        raise FieldChangeError(_("A choice field needs at least one choice."))
    type_changed = spec.field_type.value != field.field_type
    choices_narrowed = bool(set(field.choices or []) - set(choices)) and not type_changed
    if type_changed or (spec.field_type in CHOICE_TYPES and choices_narrowed):
        target = CustomField(key=field.key, field_type=spec.field_type.value, choices=choices)
        converted = _convert_all(field, target, region)
        if type_changed:
            for client, value in converted:
                custom = dict(client.custom)
                if value is None:
                    custom.pop(field.key, None)
                else:
                    custom[field.key] = value
                client.custom = custom
    was_indexed = field.indexed
    field.label = label
    field.field_type = spec.field_type.value
    field.choices = choices
    field.required = spec.required
    field.personal_data = spec.personal_data
    field.show_in_list = spec.show_in_list
    field.help_text = (spec.help_text or "").strip() or None
    db.session.flush()
    if was_indexed and not field.indexed:
        indexes.drop_index(field.key)
    elif field.indexed and not field.is_archived:
        indexes.create_index(field.key)
    return field


def archive_field(field: CustomField) -> None:
    """Hide the field everywhere; its values stay stored and come back on restore."""
    field.archived_at = utcnow()
    field.show_in_list = False
    db.session.flush()
    indexes.drop_index(field.key)


def restore_field(field: CustomField) -> None:
    field.archived_at = None
    position = (db.session.scalar(select(func.max(CustomField.position))) or 0) + 1
    field.position = position
    db.session.flush()
    if field.indexed:
        indexes.create_index(field.key)


def move_field(field: CustomField, direction: int) -> None:
    """Swap with the neighbour above (-1) or below (+1) among active fields."""
    fields = active_fields_for_update()
    ids = [f.id for f in fields]
    if field.id not in ids:
        return
    at = ids.index(field.id)
    other = at + direction
    if not 0 <= other < len(fields):
        return
    fields[at], fields[other] = fields[other], fields[at]
    for position, item in enumerate(fields, start=1):
        item.position = position
    db.session.flush()


def rebuild_indexes() -> list[str]:
    """Create every missing custom field index (after a restore from backup, say)."""
    names = []
    for field in active_fields():
        if field.indexed:
            indexes.create_index(field.key)
            names.append(indexes.index_name(field.key))
    return names
