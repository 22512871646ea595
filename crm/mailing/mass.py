"""The client list's mass action "Add to a mailing list" (crm.search.mass registry).

Set-based like the other mass actions: the selection's ids in chunks, each chunk one
`bulk_subscribe` (subscriptions, consent events and states, history). Only live
single opt-in lists are offered: a double opt-in list needs each person's own
confirmation, which a mass action cannot give.
"""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from sqlalchemy import ColumnElement, select
from wtforms import SelectField, ValidationError

from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.clients.models import Client
from crm.consents.models import Method
from crm.consents.services import now_utc
from crm.extensions import db
from crm.mailing import services
from crm.mailing.models import EventSource, MailingList, OptIn
from crm.search.mass import MassAction, register_mass_action
from crm.web.forms import option_values, options

CHUNK = 1000


class AddToListForm(FlaskForm):
    list_id = SelectField(_l("Mailing list"), choices=[], validate_choice=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lists = db.session.scalars(
            select(MailingList)
            .where(MailingList.archived_at.is_(None), MailingList.opt_in == OptIn.SINGLE.value)
            .order_by(MailingList.name)
        )
        self.list_id.choices = options([(str(m.id), m.name) for m in lists])

    def validate_list_id(self, field: Any) -> None:
        if not field.data or field.data not in option_values(field.choices):
            raise ValidationError(_l("Pick a list."))


def add_to_list(
    user: User, condition: ColumnElement[bool], form: AddToListForm
) -> tuple[int, dict[str, Any], str]:
    mlist = db.session.get(MailingList, int(form.list_id.data))
    assert mlist is not None  # the form checked the choice
    now = now_utc(None)
    ids = list(db.session.scalars(select(Client.id).where(condition).order_by(Client.id)))
    added = 0
    skipped: dict[str, int] = {}
    for start in range(0, len(ids), CHUNK):
        n, why = services.bulk_subscribe(
            ids[start : start + CHUNK], mlist, Method.STAFF, user, EventSource.MASS, "", now
        )
        added += n
        for reason in why.values():
            skipped[reason] = skipped.get(reason, 0) + 1
    message = ngettext(
        "%(num)s client added to “%(list)s”.",
        "%(num)s clients added to “%(list)s”.",
        added,
        list=mlist.name,
    )
    return added, {"list": mlist.name, "skipped": skipped}, message


def register() -> None:
    """Add the action to the list's menu (idempotent: the registry is keyed)."""
    register_mass_action(
        MassAction(
            "list_add",
            _l("Add to a mailing list"),
            (Permission.CLIENTS_EDIT,),
            lambda n: ngettext(
                "Add %(num)s client to the list", "Add %(num)s clients to the list", n
            ),
            form=AddToListForm,
            run=add_to_list,
            audit_action="clients.mass_list_add",
        )
    )
