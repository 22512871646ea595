from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from crm.audit.services import changes_details
from crm.audit.services import record as audit
from crm.auth.permissions import Permission
from crm.extensions import db
from crm.fields import services
from crm.fields.forms import TYPE_LABELS, FieldForm
from crm.fields.models import CustomField, FieldType
from crm.fields.services import FieldChangeError, FieldSpec
from crm.org.services import organisation
from crm.web.access import requires
from crm.web.render import render

bp = Blueprint("fields", __name__, url_prefix="/admin/fields", template_folder="templates")


def _spec(form: FieldForm) -> FieldSpec:
    return FieldSpec(
        label=form.label.data or "",
        field_type=FieldType(form.field_type.data),
        choices=services.clean_choices(form.choices.data or ""),
        required=bool(form.required.data),
        personal_data=bool(form.personal_data.data),
        show_in_list=bool(form.show_in_list.data),
        help_text=form.help_text.data,
    )


AUDITED = (
    "label",
    "field_type",
    "choices",
    "required",
    "personal_data",
    "show_in_list",
    "help_text",
)


def _snapshot(field: CustomField) -> dict[str, object]:
    return {name: getattr(field, name) for name in AUDITED}


def _audit(action: str, field: CustomField, before: dict[str, object] | None = None) -> None:
    after = _snapshot(field)
    changes = {k: ((before or {}).get(k), v) for k, v in after.items()}
    changes = {k: pair for k, pair in changes.items() if pair[0] != pair[1]}
    details = changes_details(changes) if before is not None else {}
    audit(action, target_type="field", target_id=field.id, details={"key": field.key, **details})


def _get(field_id: int) -> CustomField:
    field = db.session.get(CustomField, field_id)
    if field is None:
        abort(404)
    return field


@bp.route("/")
@requires(Permission.FIELDS_MANAGE)
def index() -> ResponseReturnValue:
    return render(
        "fields/index.html",
        "fields/_table.html",
        fields=services.all_fields(),
        type_labels=TYPE_LABELS,
    )


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.FIELDS_MANAGE)
def create() -> ResponseReturnValue:
    form = FieldForm()
    if form.validate_on_submit():
        try:
            field = services.create_field(_spec(form))
        except FieldChangeError as exc:
            form.label.errors = [*form.label.errors, str(exc)]
        else:
            _audit("field.create", field, before={})
            db.session.commit()
            flash(_("Field “%(label)s” added.", label=field.label), "success")
            return redirect(url_for("fields.index"))
    return render("fields/form.html", form=form, field=None)


@bp.route("/<int:field_id>", methods=["GET", "POST"])
@requires(Permission.FIELDS_MANAGE)
def edit(field_id: int) -> ResponseReturnValue:
    field = _get(field_id)
    form = FieldForm(obj=field)
    if request.method == "GET":
        form.choices.data = "\n".join(field.choices or [])
    change_error = None
    if form.validate_on_submit():
        before = _snapshot(field)
        try:
            services.update_field(field, _spec(form), organisation().default_phone_region)
        except FieldChangeError as exc:
            db.session.rollback()
            change_error = str(exc)
        else:
            _audit("field.update", field, before)
            db.session.commit()
            flash(_("Field “%(label)s” saved.", label=field.label), "success")
            return redirect(url_for("fields.index"))
    return render("fields/form.html", form=form, field=field, change_error=change_error)


@bp.route("/<int:field_id>/archive", methods=["POST"])
@requires(Permission.FIELDS_MANAGE)
def archive(field_id: int) -> ResponseReturnValue:
    field = _get(field_id)
    services.archive_field(field)
    _audit("field.archive", field)
    db.session.commit()
    flash(
        _(
            "Field “%(label)s” archived. Its values are kept; restore it to show them again.",
            label=field.label,
        ),
        "success",
    )
    return redirect(url_for("fields.index"))


@bp.route("/<int:field_id>/restore", methods=["POST"])
@requires(Permission.FIELDS_MANAGE)
def restore(field_id: int) -> ResponseReturnValue:
    field = _get(field_id)
    services.restore_field(field)
    _audit("field.restore", field)
    db.session.commit()
    flash(_("Field “%(label)s” restored.", label=field.label), "success")
    return redirect(url_for("fields.index"))


@bp.route("/<int:field_id>/move", methods=["POST"])
@requires(Permission.FIELDS_MANAGE)
def move(field_id: int) -> ResponseReturnValue:
    field = _get(field_id)
    direction = -1 if request.form.get("direction") == "up" else 1
    services.move_field(field, direction)
    db.session.commit()
    return render(
        "fields/index.html",
        "fields/_table.html",
        fields=services.all_fields(),
        type_labels=TYPE_LABELS,
    )
