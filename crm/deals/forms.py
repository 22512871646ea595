from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, Field, SelectField, StringField, ValidationError
from wtforms.validators import DataRequired, Length, Optional

from crm.auth.models import User
from crm.clients.models import Client
from crm.clients.policy import visible_clients
from crm.deals.models import StageKind
from crm.deals.services import all_stages
from crm.extensions import db
from crm.fields.values import decimal_text
from crm.org.forms import CURRENCIES
from crm.org.services import organisation
from crm.tasks.forms import user_choices
from crm.web.forms import option_values, options

MAX_AMOUNT = Decimal("1e12")  # Numeric(14, 2): twelve digits before the point
CENT = Decimal("0.01")

KIND_LABELS = {
    StageKind.OPEN.value: _l("In progress"),
    StageKind.WON.value: _l("Won"),
    StageKind.LOST.value: _l("Lost"),
}


class AmountError(ValueError):
    """What is wrong with a typed amount, for a person."""


def parse_amount(raw: str | None) -> Decimal | None:
    """A typed amount as Decimal with two places; None when empty.

    Accepts a decimal comma or point and spaces, apostrophes or the other mark as
    thousands separators: '1250', '1250,5', '1 250,50', '1.250,50', '1,250.50', "1'250.50".
    Refuses more than two decimal places rather than rounding silently.
    """
    text = (raw or "").strip()
    if not text:
        return None
    cleaned = decimal_text(text)
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", cleaned):
        raise AmountError(_("Enter an amount, for example 1250 or 1 250,50."))
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise AmountError(_("Enter an amount, for example 1250 or 1 250,50.")) from None
    if value < 0:
        raise AmountError(_("The amount cannot be negative."))
    if value != value.quantize(CENT):
        raise AmountError(_("Use at most two decimal places, for example 1250,50."))
    if value >= MAX_AMOUNT:
        raise AmountError(_("The amount is too large."))
    return value.quantize(CENT)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def currency_choices(*keep: str | None) -> list[str]:
    currencies = list(CURRENCIES)
    for code in keep:
        if code and code not in currencies:
            currencies.append(code)
    return currencies


class DealForm(FlaskForm):
    title = StringField(
        _l("Deal"),
        validators=[DataRequired(message=_l("Name the deal.")), Length(max=200)],
        filters=[_strip],
        render_kw={"autocomplete": "off", "maxlength": 200},
    )
    client_id = StringField(_l("Client"))
    amount = StringField(
        _l("Amount"),
        description=_l("For example 1250 or 1 250,50."),
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )
    currency = SelectField(_l("Currency"), choices=[])
    stage_id = SelectField(_l("Stage"), choices=[])
    expected_close = DateField(_l("Expected close"), validators=[Optional()])
    owner_id = SelectField(_l("Owner"), choices=[], validate_choice=False)

    def __init__(
        self,
        *args: Any,
        user: User,
        fixed_client: Client | None = None,
        keep_currency: str | None = None,
        keep_owner: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.client: Client | None = fixed_client
        self.parsed_amount: Decimal | None = None
        if fixed_client is not None:
            del self.client_id
        default_currency = organisation().default_currency
        self.currency.choices = options(
            (c, c) for c in currency_choices(default_currency, keep_currency)
        )
        self.stage_id.choices = options((str(s.id), s.name) for s in all_stages())
        self.owner_id.choices = options([("", _("Nobody")), *user_choices(keep_owner)])

    def validate_client_id(self, field: Field) -> None:
        raw = (field.data or "").strip()
        client = None
        if raw.isdigit():
            client = db.session.scalar(
                select(Client).where(Client.id == int(raw), visible_clients(self.user))
            )
        if client is None:
            raise ValidationError(_("Choose the client this deal is with."))
        self.client = client

    def validate_amount(self, field: Field) -> None:
        try:
            self.parsed_amount = parse_amount(field.data)
        except AmountError as exc:
            raise ValidationError(str(exc)) from None

    def validate_owner_id(self, field: Field) -> None:
        if field.data and field.data not in option_values(field.choices):
            raise ValidationError(_("Pick a person from the list."))

    @property
    def owner(self) -> int | None:
        return int(self.owner_id.data) if self.owner_id.data else None


class StageForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(message=_l("Give the stage a name.")), Length(max=64)],
        filters=[_strip],
        render_kw={"maxlength": 64, "autocomplete": "off"},
    )
    kind = SelectField(
        _l("Kind"),
        choices=options(KIND_LABELS.items()),
        default=StageKind.OPEN.value,
        description=_l("Won and lost stages close a deal: they leave the board."),
    )
