"""Mass actions on the client list: what a selection is, and the set-based changes.

A selection is either rows ticked on the page (their ids) or "all N matching" (the
whole query). Either way the condition handed to an action carries the user's scope:
ids of clients outside it (forged, or out of scope since) are simply not matched.
Changes are one SQL statement each, flushed, never committed here; the view audits and
commits once.

Extension point: a later domain adds an action with register_mass_action (mailing lists
will add "Add to a mailing list"); the list offers only registered actions the user
may run, so nothing shows before it works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.clients.models import Client, Tag, client_tags
from crm.clients.policy import visible_clients
from crm.clients.services import tags_by_name
from crm.extensions import db
from crm.search.fields import Catalog
from crm.search.parser import MAX_LENGTH
from crm.search.services import client_condition, parse_query

# A page shows 50 rows; anything much longer than that was not ticked by a person.
MAX_IDS = 1000


@dataclass(frozen=True)
class Selection:
    ids: tuple[int, ...] = ()
    all_matching: bool = False
    query: str = ""

    @property
    def empty(self) -> bool:
        return not self.all_matching and not self.ids

    def condition(self, user: User, catalog: Catalog | None = None) -> ColumnElement[bool]:
        """The selected clients within the user's scope; QueryError for a bad query."""
        if self.all_matching:
            return client_condition(user, parse_query(self.query, catalog), catalog)
        return and_(visible_clients(user), Client.id.in_(self.ids))

    def audit_details(self) -> dict[str, Any]:
        if self.all_matching:
            return {"query": self.query}
        return {"ids": list(self.ids)}

    def hidden_inputs(self) -> list[tuple[str, str]]:
        """(name, value) pairs that carry the selection to the next request."""
        if self.all_matching:
            return [("all", "1"), ("q", self.query)]
        return [("ids", str(i)) for i in self.ids]


def selection_from(values: Mapping[str, Any]) -> Selection:
    """The selection in request args or form data (`ids` repeated, or `all` with `q`).
    Anything that is not a positive id is dropped."""
    getlist: Callable[[str], list[str]] = values.getlist  # type: ignore[attr-defined]
    if values.get("all") == "1":
        return Selection(all_matching=True, query=str(values.get("q", ""))[: MAX_LENGTH + 1])
    ids: dict[int, None] = {}
    for raw in getlist("ids"):
        for part in str(raw).split(","):
            if part.strip().isdigit() and 0 < int(part) < 2**31:
                ids.setdefault(int(part), None)
    return Selection(ids=tuple(ids)[:MAX_IDS])


def count_selected(condition: ColumnElement[bool]) -> int:
    """The exact number of selected clients (a confirmation says how many will change)."""
    stmt = select(Client.id).where(condition).subquery()
    return db.session.scalar(select(func.count()).select_from(stmt)) or 0


# --- the changes --------------------------------------------------------------------------


def add_tag(condition: ColumnElement[bool], name: str) -> tuple[Tag, int]:
    """Tag every selected client that is not tagged yet (one INSERT … SELECT); returns
    the tag and how many clients got it."""
    (tag,) = tags_by_name([name])
    db.session.flush()
    tagged = select(client_tags.c.client_id).where(client_tags.c.tag_id == tag.id)
    rows = select(Client.id, literal(tag.id, Integer)).where(condition, Client.id.not_in(tagged))
    # RETURNING counts the rows inserted: psycopg reports no rowcount for INSERT … SELECT.
    stmt = insert(client_tags).from_select(["client_id", "tag_id"], rows)
    result = db.session.execute(stmt.returning(client_tags.c.client_id))
    return tag, sum(1 for _row in result)


def remove_tag(condition: ColumnElement[bool], tag: Tag) -> int:
    """Untag every selected client (one DELETE); returns how many lost the tag."""
    selected = select(Client.id).where(condition)
    result = db.session.execute(
        delete(client_tags).where(
            client_tags.c.tag_id == tag.id, client_tags.c.client_id.in_(selected)
        )
    )
    return max(result.rowcount or 0, 0)  # type: ignore[attr-defined]


def assign_owner(condition: ColumnElement[bool], owner: User | None) -> int:
    """Give every selected client this owner (or none); one UPDATE of the rows whose
    owner differs, which also moves their `updated` time. Returns how many changed."""
    if owner is None:
        differs = Client.owner_id.is_not(None)
    else:
        differs = or_(Client.owner_id.is_(None), Client.owner_id != owner.id)
    stmt = (
        update(Client)
        .where(condition, differs)
        .values(owner_id=owner.id if owner else None)
        .execution_options(synchronize_session=False)
    )
    return max(db.session.execute(stmt).rowcount or 0, 0)  # type: ignore[attr-defined]


# --- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class MassAction:
    """One entry of the list's "With the selected clients" menu.

    `form` builds the confirmation's inputs (a FlaskForm class taking no arguments, or
    None); `run(user, condition, form)` makes the change and returns (how many clients
    changed, audit details, the message shown after). A download (`download` set to a
    file format) has neither: its confirmation links to the export."""

    key: str
    label: Any
    permissions: tuple[Permission, ...]
    confirm: Callable[[int], str]  # the confirmation's button for n selected clients
    form: type[FlaskForm] | None = None
    run: Callable[[User, ColumnElement[bool], Any], tuple[int, dict[str, Any], str]] | None = None
    download: str | None = None
    audit_action: str = ""

    def allowed(self, user: User) -> bool:
        return all(user.can(p) for p in self.permissions)


MASS_ACTIONS: dict[str, MassAction] = {}


def register_mass_action(action: MassAction) -> None:
    MASS_ACTIONS[action.key] = action


def actions_for(user: User) -> list[MassAction]:
    return [a for a in MASS_ACTIONS.values() if a.allowed(user)]


def _register_builtin() -> None:
    from crm.search import forms

    def run_add_tag(
        user: User, condition: ColumnElement[bool], form: forms.AddTagForm
    ) -> tuple[int, dict[str, Any], str]:
        tag, changed = add_tag(condition, form.tag.data or "")
        message = ngettext(
            "Tag “%(tag)s” added to %(num)s client.",
            "Tag “%(tag)s” added to %(num)s clients.",
            changed,
            tag=tag.name,
        )
        return changed, {"tag": tag.name}, message

    def run_remove_tag(
        user: User, condition: ColumnElement[bool], form: forms.RemoveTagForm
    ) -> tuple[int, dict[str, Any], str]:
        tag = db.session.get(Tag, int(form.tag.data))
        assert tag is not None  # the form checked the choice
        changed = remove_tag(condition, tag)
        message = ngettext(
            "Tag “%(tag)s” removed from %(num)s client.",
            "Tag “%(tag)s” removed from %(num)s clients.",
            changed,
            tag=tag.name,
        )
        return changed, {"tag": tag.name}, message

    def run_assign_owner(
        user: User, condition: ColumnElement[bool], form: forms.AssignOwnerForm
    ) -> tuple[int, dict[str, Any], str]:
        owner = db.session.get(User, int(form.owner.data)) if form.owner.data else None
        changed = assign_owner(condition, owner)
        name = owner.display_name if owner else str(_l("nobody"))
        message = ngettext(
            "%(num)s client now belongs to %(owner)s.",
            "%(num)s clients now belong to %(owner)s.",
            changed,
            owner=name,
        )
        return changed, {"owner": owner.email if owner else None}, message

    edit = (Permission.CLIENTS_EDIT,)
    export = (Permission.CLIENTS_EXPORT,)
    for action in (
        MassAction(
            "tag_add",
            _l("Add a tag"),
            edit,
            lambda n: ngettext(
                "Add the tag to %(num)s client", "Add the tag to %(num)s clients", n
            ),
            form=forms.AddTagForm,
            run=run_add_tag,
            audit_action="clients.mass_tag_add",
        ),
        MassAction(
            "tag_remove",
            _l("Remove a tag"),
            edit,
            lambda n: ngettext(
                "Remove the tag from %(num)s client", "Remove the tag from %(num)s clients", n
            ),
            form=forms.RemoveTagForm,
            run=run_remove_tag,
            audit_action="clients.mass_tag_remove",
        ),
        MassAction(
            "owner",
            _l("Assign an owner"),
            edit,
            lambda n: ngettext(
                "Assign the owner to %(num)s client", "Assign the owner to %(num)s clients", n
            ),
            form=forms.AssignOwnerForm,
            run=run_assign_owner,
            audit_action="clients.mass_owner",
        ),
        MassAction(
            "export_xlsx",
            _l("Export as xlsx"),
            export,
            lambda n: ngettext(
                "Download %(num)s client as xlsx", "Download %(num)s clients as xlsx", n
            ),
            download="xlsx",
        ),
        MassAction(
            "export_csv",
            _l("Export as CSV"),
            export,
            lambda n: ngettext(
                "Download %(num)s client as CSV", "Download %(num)s clients as CSV", n
            ),
            download="csv",
        ),
    ):
        register_mass_action(action)


def ids_param(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


_register_builtin()
