"""The search entry points for views and other domains: text -> tree -> condition; the
builder's context; saved filters.

Every condition handed out for clients either carries the user's scope
(client_condition) or goes to crm.clients.listing, which ANDs the scope itself
(query_condition). Saved-filter changes flush and are audited here; the view commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import joinedload

from crm.audit.services import record
from crm.auth.models import User
from crm.clients.models import Client, Tag
from crm.clients.policy import visible_clients
from crm.extensions import db
from crm.search import builder
from crm.search.builder import TEXT_REF, BuilderView
from crm.search.compiler import SearchContext, compile_tree
from crm.search.errors import QueryError
from crm.search.fields import CORE, Catalog, FieldProblem, ValueType, field_problems, resolve
from crm.search.models import SavedFilter
from crm.search.parser import parse
from crm.search.policy import filters_visible_to, may_change
from crm.search.printer import to_text
from crm.search.tree import Node, from_dict, to_dict
from crm.text import fold

CORE_REFS = frozenset(core.ref for core in CORE)


def parse_query(text: str, catalog: Catalog | None = None) -> Node | None:
    """The resolved tree for a query (None when it is blank); QueryError otherwise."""
    node = parse(text)
    if node is None:
        return None
    return resolve(node, catalog or Catalog.build())


def query_condition(
    text: str, catalog: Catalog | None = None, ctx: SearchContext | None = None
) -> ColumnElement[bool] | None:
    """The condition for a query typed into the client list, WITHOUT the scope: for
    crm.clients.listing.list_clients/count_clients, which AND visible_clients
    themselves. None for a blank query."""
    parsed = parse(text)
    if parsed is None:  # the plain list: no catalogue needed
        return None
    catalog = catalog or Catalog.build()
    node = resolve(parsed, catalog)
    return compile_tree(node, catalog, ctx or SearchContext.current())


def client_condition(
    user: User,
    node: Node | None,
    catalog: Catalog | None = None,
    ctx: SearchContext | None = None,
) -> ColumnElement[bool]:
    """The clients `user` may see that match the tree (exports, mass actions,
    audiences). The tree is resolved again, so a stored one that names an archived or
    deleted field raises QueryError instead of matching something else."""
    if node is None:
        return visible_clients(user)
    catalog = catalog or Catalog.build()
    resolved = resolve(node, catalog)
    return and_(
        visible_clients(user), compile_tree(resolved, catalog, ctx or SearchContext.current())
    )


def query_text(node: Node | None, catalog: Catalog | None = None) -> str:
    """The canonical text of a tree, with custom fields by their current labels."""
    return to_text(node, catalog or Catalog.build())


# --- counting ----------------------------------------------------------------------------


def count_matching(condition: ColumnElement[bool], cap: int) -> int:
    """How many clients satisfy `condition` (which must carry the scope), counting at
    most cap + 1 when cap is set (a broad filter stays cheap; see listing.COUNT_CAP)."""
    matches = select(Client.id).where(condition)
    if cap:
        matches = matches.limit(cap + 1)
    return db.session.scalar(select(func.count()).select_from(matches.subquery())) or 0


# --- the builder ---------------------------------------------------------------------------


def builder_context(view: BuilderView, catalog: Catalog) -> dict[str, Any]:
    """What search/_builder.html needs besides the state: the fields to pick from
    (grouped), and suggestions for tags and owners when a row asks for them."""
    core = [(f.ref, f.label) for f in catalog.fields if not f.custom and f.ref in CORE_REFS]
    custom = [(f.ref, f.label) for f in catalog.fields if f.custom and not f.archived]
    groups = [
        (_("Search words"), [(TEXT_REF, _("Name, company, email or phone"))]),
        (_("Client"), core),
    ]
    if custom:
        groups.append((_("Custom fields"), custom))
    # What providers add (later: consent state, list membership).
    more = [
        (f.ref, f.label)
        for f in catalog.fields
        if not f.custom and not f.archived and f.ref not in CORE_REFS
    ]
    if more:
        groups.append((_("More"), more))
    kinds = {
        f.value_type
        for f in (builder.field_for(r.ref, catalog) for r in builder.all_rows(view.root))
        if f is not None
    }
    tags: list[str] = []
    users: list[str] = []
    if ValueType.TAGS in kinds:
        tags = list(db.session.scalars(select(Tag.name).order_by(Tag.name).limit(500)))
    if ValueType.USER in kinds:
        users = list(
            db.session.scalars(
                select(User.email).where(User.active.is_(True)).order_by(User.email).limit(500)
            )
        )
    return {
        "builder": view,
        "field_for": lambda ref: builder.field_for(ref, catalog),
        "operators": builder.operators,
        "widget": builder.widget,
        "choices_for": builder.choices_for,
        "field_groups": groups,
        "tag_names": tags,
        "user_emails": users,
    }


# --- saved filters -------------------------------------------------------------------------


class FilterError(ValueError):
    """A saved-filter change that was refused, with the reason for a person."""


def stored_tree(saved: SavedFilter) -> Node | None:
    """The saved filter's tree (QueryError if the stored form is damaged)."""
    return from_dict(saved.tree) if saved.tree is not None else None


def filter_problems(saved: SavedFilter, catalog: Catalog) -> list[FieldProblem]:
    try:
        return field_problems(stored_tree(saved), catalog)
    except QueryError:
        return [FieldProblem("?", None, False)]


def filter_text(saved: SavedFilter, catalog: Catalog) -> str:
    """The filter's query as text today: labels as they are now (a renamed field shows
    its new label), archived fields by key (so the list says they are archived)."""
    try:
        return query_text(stored_tree(saved), catalog)
    except QueryError:
        return saved.query_text


def filter_args(saved: SavedFilter, catalog: Catalog) -> dict[str, str]:
    """The client list's URL parameters that apply a saved filter."""
    args = {"q": filter_text(saved, catalog)}
    if saved.sort and saved.sort != "name":
        args["sort"] = saved.sort
    if saved.sort_desc:
        args["dir"] = "desc"
    if saved.columns:
        args["columns"] = ",".join(saved.columns)
    return {k: v for k, v in args.items() if v}


def filter_count(user: User, saved: SavedFilter, catalog: Catalog, cap: int) -> int:
    """Clients the filter matches within the user's scope (capped); QueryError when it
    names an archived or unknown field."""
    return count_matching(client_condition(user, stored_tree(saved), catalog), cap)


def visible_filters(user: User) -> list[SavedFilter]:
    """The user's own filters, then those others share, each by name."""
    rows = db.session.scalars(
        select(SavedFilter)
        .where(filters_visible_to(user))
        .options(joinedload(SavedFilter.owner))
        .order_by(SavedFilter.name, SavedFilter.id)
    )
    mine, shared = [], []
    for row in rows:
        (mine if row.owner_id == user.id else shared).append(row)

    def key(saved: SavedFilter) -> tuple[str, int]:
        return fold(saved.name), saved.id

    return sorted(mine, key=key) + sorted(shared, key=key)


def _check_name(owner_id: int, name: str, exclude: int | None = None) -> str:
    name = " ".join(name.split())
    if not name:
        raise FilterError(_("Give the filter a name."))
    mine = select(SavedFilter).where(SavedFilter.owner_id == owner_id)
    for other in db.session.scalars(mine):
        if other.id == exclude:
            continue
        if other.name.casefold() == name.casefold():
            raise FilterError(_("You have a filter named “%(name)s” already.", name=other.name))
    return name[:100]


def _audit_details(saved: SavedFilter) -> dict[str, Any]:
    return {"name": saved.name, "shared": saved.shared, "query": saved.query_text}


def create_filter(
    owner: User,
    name: str,
    *,
    shared: bool,
    node: Node | None,
    text: str,
    columns: list[str],
    sort: str,
    desc: bool,
) -> SavedFilter:
    """Save a search. `node` is the resolved tree (references, not labels)."""
    saved = SavedFilter(
        name=_check_name(owner.id, name),
        owner_id=owner.id,
        shared=shared,
        tree=to_dict(node) if node is not None else None,
        query_text=text,
        columns=list(columns),
        sort=sort[:80] or "name",
        sort_desc=desc,
    )
    db.session.add(saved)
    db.session.flush()
    record(
        "saved_filter.create",
        target_type="saved_filter",
        target_id=saved.id,
        details=_audit_details(saved),
    )
    return saved


def rename_filter(saved: SavedFilter, name: str) -> None:
    old = saved.name
    saved.name = _check_name(saved.owner_id, name, exclude=saved.id)
    if saved.name == old:
        return
    db.session.flush()
    details = _audit_details(saved) | {"changes": {"name": [old, saved.name]}}
    record("saved_filter.update", target_type="saved_filter", target_id=saved.id, details=details)


def share_filter(saved: SavedFilter, shared: bool) -> None:
    if saved.shared == shared:
        return
    saved.shared = shared
    db.session.flush()
    details = _audit_details(saved) | {"changes": {"shared": [not shared, shared]}}
    record("saved_filter.update", target_type="saved_filter", target_id=saved.id, details=details)


def delete_filter(saved: SavedFilter) -> None:
    record(
        "saved_filter.delete",
        target_type="saved_filter",
        target_id=saved.id,
        details=_audit_details(saved) | {"owner": saved.owner.email if saved.owner else None},
    )
    db.session.delete(saved)
    db.session.flush()


@dataclass
class FilterItem:
    """A saved filter as the sidebar shows it."""

    saved: SavedFilter
    args: dict[str, str]  # the client list's URL parameters that apply it
    problems: list[FieldProblem]
    editable: bool
    mine: bool
    active: bool

    @property
    def problem_text(self) -> str:
        archived = [p.label or p.ref for p in self.problems if p.archived]
        if archived:
            return ngettext(
                "uses an archived field: %(names)s",
                "uses archived fields: %(names)s",
                len(archived),
                names=", ".join(archived),
            )
        return _("uses a field that no longer exists")


def sidebar_context(user: User, catalog: Catalog, current_q: str = "") -> dict[str, Any]:
    """The saved filters the user sees, for the sidebar of the client list."""
    items = []
    for saved in visible_filters(user):
        args = filter_args(saved, catalog)
        items.append(
            FilterItem(
                saved=saved,
                args=args,
                problems=filter_problems(saved, catalog),
                editable=may_change(user, saved),
                mine=saved.owner_id == user.id,
                active=bool(current_q) and args.get("q") == current_q,
            )
        )
    return {"saved_filters": items}
