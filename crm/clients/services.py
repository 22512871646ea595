"""Client changes. Services flush; the view (or command, or actor) commits once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from crm.auth.models import User
from crm.clients.forms import CORE_INPUTS, ClientCoreForm
from crm.clients.models import Client, Tag
from crm.extensions import db

TEXT_INPUTS = tuple(n for n in CORE_INPUTS if n not in ("owner_id", "tags"))


def parse_tags(raw: str) -> list[str]:
    names: dict[str, str] = {}
    for part in raw.split(","):
        name = " ".join(part.split())[:64]
        if name:
            names.setdefault(name.casefold(), name)
    return list(names.values())


def tags_by_name(names: Iterable[str]) -> list[Tag]:
    """The tags with these names (case-insensitive), creating the missing ones."""
    wanted = {n.casefold(): n for n in names}
    if not wanted:
        return []
    existing = {
        t.name.casefold(): t
        for t in db.session.scalars(select(Tag).where(func.lower(Tag.name).in_(list(wanted))))
    }
    tags = []
    for folded, name in wanted.items():
        tag = existing.get(folded)
        if tag is None:
            tag = Tag(name=name)
            db.session.add(tag)
        tags.append(tag)
    return tags


def apply_form(client: Client, form: ClientCoreForm) -> dict[str, tuple[Any, Any]]:
    """Copy the form's (validated) inputs onto the client; return {field: (old, new)}."""
    changes: dict[str, tuple[Any, Any]] = {}
    for name in TEXT_INPUTS:
        if name in form:
            new = (form[name].data or "").strip()
            old = getattr(client, name)
            if new != old:
                changes[name] = (old, new)
                setattr(client, name, new)
    if "owner_id" in form:
        new_owner = int(form.owner_id.data) if form.owner_id.data else None
        if new_owner != client.owner_id:
            changes["owner_id"] = (client.owner_id, new_owner)
            client.owner_id = new_owner
            client.owner = db.session.get(User, new_owner) if new_owner else None
    if "tags" in form:
        new_tags = tags_by_name(parse_tags(form.tags.data or ""))
        old_names = sorted(t.name for t in client.tags)
        new_names = sorted(t.name for t in new_tags)
        if old_names != new_names:
            changes["tags"] = (old_names, new_names)
            client.tags = new_tags
    if form.parsed_custom:
        custom = dict(client.custom or {})
        for key, value in form.parsed_custom.items():
            old = custom.get(key)
            if value is None:
                custom.pop(key, None)
            else:
                custom[key] = value
            if old != value:
                changes[f"cf:{key}"] = (old, value)
        client.custom = custom
    if changes:
        client.refresh_search_text()
    return changes


def create_client(form: ClientCoreForm, created_by: User) -> Client:
    client = Client(custom={}, owner_id=created_by.id)
    client.owner = created_by
    db.session.add(client)
    apply_form(client, form)
    client.refresh_search_text()
    db.session.flush()
    return client


def delete_client(client: Client) -> list[str]:
    """Delete the client and everything hanging off it (cascades in the database).
    Returns the storage keys of its attachments: the caller removes those files after
    the commit, so a failed commit never leaves rows pointing at deleted files."""
    from crm.attachments.models import Attachment

    keys = list(
        db.session.scalars(select(Attachment.storage_key).where(Attachment.client_id == client.id))
    )
    db.session.delete(client)
    db.session.flush()
    return keys
