"""My tasks, the task form and page, and the task section of the client card.

Complete, reopen and delete answer htmx with the piece of page they came from, named
by the `view` argument: `row` (a row of My tasks), `card` (the card's task section);
anything else (the task page, or no JavaScript) is redirected back.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from crm.auth.models import User
from crm.auth.permissions import Permission
from crm.clients.models import Client
from crm.clients.policy import get_client_or_404
from crm.extensions import db, htmx
from crm.tasks import services
from crm.tasks.forms import ORIGIN_LABELS, TaskForm
from crm.tasks.models import Task
from crm.tasks.policy import get_task_or_404
from crm.tasks.services import TaskView, org_today
from crm.web.access import requires
from crm.web.pagination import page_number, paginate
from crm.web.render import htmx_redirect, render
from crm.web.urls import next_url, safe_next

bp = Blueprint("tasks", __name__, url_prefix="/tasks", template_folder="templates")


@bp.app_context_processor
def _task_helpers() -> dict[str, Any]:
    # Callables, so pages without tasks pay nothing.
    return {"org_today": org_today, "task_origins": ORIGIN_LABELS}


def _client_section(client: Client, **extra: Any) -> ResponseReturnValue:
    return render(
        "tasks/_client_tasks.html",
        client=client,
        tasks=services.open_tasks_for_client(client.id),
        **extra,
    )


def _answer(task: Task, client: Client | None, notice: str | None = None) -> ResponseReturnValue:
    """The response to complete/reopen: the row or the card section for htmx, else back."""
    view = request.values.get("view")
    if htmx and view == "row":
        return render("tasks/_row.html", task=task, view=request.values.get("tab", "open"))
    if htmx and view == "card" and client is not None:
        return _client_section(client, notice=notice, notice_task=task)
    if notice:
        flash(notice, "success")
    return redirect(next_url(url_for("tasks.show", task_id=task.id)))


# --- My tasks ----------------------------------------------------------------------------


@bp.route("/")
@requires(Permission.TASKS_VIEW)
def mine() -> ResponseReturnValue:
    try:
        view = TaskView(request.args.get("view", TaskView.OPEN.value))
    except ValueError:
        view = TaskView.OPEN
    today = org_today()
    page = paginate(services.my_tasks_query(current_user, view), page_number(), services.TASK_PAGE)
    return render(
        "tasks/mine.html",
        "tasks/_list.html",
        results=page,
        view=view.value,
        counts=services.my_task_counts(current_user, today),
        today=today,
    )


# --- one task ----------------------------------------------------------------------------


@bp.route("/new", methods=["GET", "POST"])
@requires(Permission.TASKS_EDIT)
def create() -> ResponseReturnValue:
    client = _client_from_request()
    form = TaskForm()
    if request.method == "GET":
        form.assignee_id.data = str(current_user.id)
    if form.validate_on_submit():
        task = services.create_task(
            form.title.data or "",
            details=form.details.data,
            client_id=client.id if client else None,
            assignee_id=form.assignee,
            due_date=form.due_date.data,
            created_by=current_user,
        )
        db.session.commit()
        flash(_("Task “%(title)s” created.", title=task.title), "success")
        default = url_for("clients.card", client_id=client.id) if client else url_for("tasks.mine")
        return redirect(next_url(default))
    return render(
        "tasks/form.html",
        form=form,
        task=None,
        client=client,
        next=safe_next(request.values.get("next")),
    )


def _client_from_request() -> Client | None:
    raw = request.values.get("client_id", "")
    if not raw:
        return None
    if not raw.isdigit():
        abort(404)
    return get_client_or_404(current_user, int(raw))


@bp.route("/<int:task_id>")
@requires(Permission.TASKS_VIEW)
def show(task_id: int) -> ResponseReturnValue:
    task = get_task_or_404(current_user, task_id)
    creator = db.session.get(User, task.created_by_id) if task.created_by_id else None
    return render("tasks/show.html", task=task, creator=creator, today=org_today())


@bp.route("/<int:task_id>/edit", methods=["GET", "POST"])
@requires(Permission.TASKS_EDIT)
def edit(task_id: int) -> ResponseReturnValue:
    task = get_task_or_404(current_user, task_id)
    form = TaskForm(obj=task, keep_assignee=task.assignee_id)
    if request.method == "GET":
        form.assignee_id.data = str(task.assignee_id or "")
    if form.validate_on_submit():
        services.update_task(
            task,
            title=form.title.data or "",
            details=form.details.data,
            assignee_id=form.assignee,
            due_date=form.due_date.data,
            changed_by=current_user,
        )
        db.session.commit()
        flash(_("Task saved."), "success")
        return redirect(next_url(url_for("tasks.show", task_id=task.id)))
    return render(
        "tasks/form.html",
        form=form,
        task=task,
        client=task.client,
        next=safe_next(request.values.get("next")),
    )


@bp.route("/<int:task_id>/complete", methods=["POST"])
@requires(Permission.TASKS_EDIT)
def complete(task_id: int) -> ResponseReturnValue:
    task = get_task_or_404(current_user, task_id)
    client = task.client
    services.complete_task(task)
    db.session.commit()
    return _answer(task, client, _("Task “%(title)s” is done.", title=task.title))


@bp.route("/<int:task_id>/reopen", methods=["POST"])
@requires(Permission.TASKS_EDIT)
def reopen(task_id: int) -> ResponseReturnValue:
    task = get_task_or_404(current_user, task_id)
    client = task.client
    services.reopen_task(task)
    db.session.commit()
    return _answer(task, client, _("Task “%(title)s” is open again.", title=task.title))


@bp.route("/<int:task_id>/delete", methods=["POST"])
@requires(Permission.TASKS_EDIT)
def delete(task_id: int) -> ResponseReturnValue:
    task = get_task_or_404(current_user, task_id)
    client = task.client
    title = task.title
    services.delete_task(task)
    db.session.commit()
    view = request.values.get("view")
    if htmx and view == "row":
        return ""  # the row's outerHTML is swapped for nothing
    if htmx and view == "card" and client is not None:
        return _client_section(client)
    flash(_("Task “%(title)s” deleted.", title=title), "success")
    return htmx_redirect(next_url(url_for("tasks.mine")))


# --- the card's task section ---------------------------------------------------------------


@bp.route("/clients/<int:client_id>")
@requires(Permission.TASKS_VIEW)
def client_section(client_id: int) -> ResponseReturnValue:
    client = get_client_or_404(current_user, client_id)
    return _client_section(client)


@bp.route("/clients/<int:client_id>/new", methods=["GET", "POST"])
@requires(Permission.TASKS_EDIT)
def client_create(client_id: int) -> ResponseReturnValue:
    """The inline form on the card: GET opens it, POST saves and closes it (or shows
    the errors next to the inputs, keeping what was typed)."""
    client = get_client_or_404(current_user, client_id)
    form = TaskForm()
    if request.method == "GET":
        form.assignee_id.data = str(current_user.id)
        return _client_section(client, task_form=form)
    if form.validate_on_submit():
        task = services.create_task(
            form.title.data or "",
            details=form.details.data,
            client_id=client.id,
            assignee_id=form.assignee,
            due_date=form.due_date.data,
            created_by=current_user,
        )
        db.session.commit()
        if not htmx:
            flash(_("Task “%(title)s” created.", title=task.title), "success")
            return redirect(url_for("clients.card", client_id=client.id))
        return _client_section(client)
    return _client_section(client, task_form=form)
