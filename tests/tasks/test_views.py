"""Tasks through the HTTP endpoints: My tasks, the form, complete/reopen with htmx,
the card section, scope and escaping."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.tasks.models import Task, TaskStatus
from crm.tasks.services import org_today
from tests.conftest import login, make_client, make_user
from tests.tasks.factories import make_task

HX = {"HX-Request": "true"}


def _admin_id(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        from crm.auth.services import find_user

        return find_user("admin@example.com").id


def _today(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return org_today()


def _task_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Task)) or 0


def _row_titles(html: str) -> list[str]:
    return re.findall(r'class="task-title">([^<]*)</a>', html)


# --- create ----------------------------------------------------------------------------------


def test_create_task_from_my_tasks(admin_client, app):
    admin_id = _admin_id(app)
    due = _today(app) + timedelta(days=3)
    response = admin_client.post(
        "/tasks/new",
        data={
            "title": "  Prepare the offer ",
            "details": "Two variants",
            "assignee_id": admin_id,
            "due_date": due.isoformat(),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/tasks/")
    with app.app_context():
        task = db.session.scalar(select(Task))
        assert task.title == "Prepare the offer"
        assert task.details == "Two variants"
        assert task.due_date == due
        assert (task.assignee_id, task.created_by_id) == (admin_id, admin_id)
        assert (task.status, task.origin, task.client_id) == ("open", "manual", None)
    page = admin_client.get("/tasks/").get_data(as_text=True)
    assert "Prepare the offer" in page


def test_new_task_form_defaults_to_me_and_offers_active_users(admin_client, app):
    with app.app_context():
        make_user("ola@example.com", role="sales", name="Ola Sprzedaż")
        gone = make_user("gone@example.com", role="sales", name="Gone User")
        gone.active = False
        db.session.commit()
    body = admin_client.get("/tasks/new").get_data(as_text=True)
    admin_id = _admin_id(app)
    assert re.search(
        rf'<option selected value="{admin_id}">|<option value="{admin_id}" selected', body
    )
    assert "Ola Sprzedaż" in body
    assert "Gone User" not in body
    assert 'type="date"' in body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"title": "   "}, "Say what needs doing."),
        ({"title": "x" * 201}, "200"),
        ({"title": "Valid", "due_date": "31.02.2025"}, "date"),
        ({"title": "Valid", "assignee_id": "999999"}, "Pick a person from the list."),
    ],
)
def test_invalid_task_shows_errors_keeps_input_and_saves_nothing(admin_client, app, data, message):
    form = {
        "title": "",
        "details": "Keep these words",
        "assignee_id": _admin_id(app),
        "due_date": "",
    }
    form.update(data)
    response = admin_client.post("/tasks/new", data=form)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert 'class="field-error"' in body
    assert message in body
    assert "Keep these words" in body
    assert _task_count(app) == 0


def test_create_for_a_client_returns_to_the_card(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    form = admin_client.get(f"/tasks/new?client_id={client_id}").get_data(as_text=True)
    assert "Wiśniewska" in form
    response = admin_client.post(
        f"/tasks/new?client_id={client_id}",
        data={"title": "Send the price list", "assignee_id": _admin_id(app)},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/clients/{client_id}")
    with app.app_context():
        assert db.session.scalar(select(Task.client_id)) == client_id
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Send the price list" in card


# --- complete and reopen -----------------------------------------------------------------


def test_complete_and_reopen_a_row_with_htmx(admin_client, app):
    admin_id = _admin_id(app)
    with app.app_context():
        task_id = make_task("Ring Jürgen", assignee_id=admin_id).id

    done = admin_client.post(f"/tasks/{task_id}/complete?view=row", headers=HX)
    assert done.status_code == 200
    html = done.get_data(as_text=True)
    assert html.lstrip().startswith(f'<tr id="task-{task_id}"')
    assert "task-done" in html and "Reopen" in html
    assert "HX-Request" in done.headers.get("Vary", "")
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.status == TaskStatus.DONE.value
        assert task.completed_at is not None

    reopened = admin_client.post(f"/tasks/{task_id}/reopen?view=row", headers=HX)
    assert reopened.status_code == 200
    html = reopened.get_data(as_text=True)
    assert "task-done" not in html and "Mark as done" in html
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task.status == TaskStatus.OPEN.value
        assert task.completed_at is None


def test_completing_twice_keeps_the_first_completion_time(admin_client, app):
    with app.app_context():
        task_id = make_task(assignee_id=_admin_id(app)).id
    admin_client.post(f"/tasks/{task_id}/complete?view=row", headers=HX)
    with app.app_context():
        first = db.session.get(Task, task_id).completed_at
    admin_client.post(f"/tasks/{task_id}/complete?view=row", headers=HX)
    with app.app_context():
        assert db.session.get(Task, task_id).completed_at == first


def test_complete_without_htmx_redirects_back(admin_client, app):
    with app.app_context():
        task_id = make_task(assignee_id=_admin_id(app)).id
    response = admin_client.post(f"/tasks/{task_id}/complete", data={"next": "/tasks/?view=done"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/tasks/?view=done"
    # An outside address in `next` is ignored.
    response = admin_client.post(f"/tasks/{task_id}/reopen", data={"next": "https://evil.example/"})
    assert response.headers["Location"] == f"/tasks/{task_id}"


# --- My tasks ------------------------------------------------------------------------------


def test_my_tasks_lists_overdue_first_then_by_date_then_undated(admin_client, app):
    admin_id = _admin_id(app)
    today = _today(app)
    with app.app_context():
        make_task("No date", assignee_id=admin_id)
        make_task("Next week", assignee_id=admin_id, due_date=today + timedelta(days=7))
        make_task("Overdue", assignee_id=admin_id, due_date=today - timedelta(days=2))
        make_task("Due today", assignee_id=admin_id, due_date=today)
        make_task("Very overdue", assignee_id=admin_id, due_date=today - timedelta(days=30))
    body = admin_client.get("/tasks/").get_data(as_text=True)
    assert _row_titles(body) == ["Very overdue", "Overdue", "Due today", "Next week", "No date"]
    rows = re.findall(r'<tr id="task-\d+" class="([^"]*)">', body)
    assert ["overdue" in r for r in rows] == [True, True, False, False, False]
    assert body.count('badge badge-overdue">overdue<') == 2
    assert "2 overdue" in body


def test_my_tasks_shows_only_my_open_tasks_and_tabs_for_the_rest(admin_client, app):
    admin_id = _admin_id(app)
    with app.app_context():
        other = make_user("ola@example.com", role="sales", name="Ola")
        admin = db.session.get(type(other), admin_id)
        make_task("Mine open", assignee_id=admin_id)
        done = make_task("Mine done", assignee_id=admin_id)
        done.status = "done"
        from crm.sqltypes import utcnow

        done.completed_at = utcnow()
        make_task("Ola's own", assignee_id=other.id, created_by=other)
        make_task("Given to Ola", assignee_id=other.id, created_by=admin)
        db.session.commit()
    assert _row_titles(admin_client.get("/tasks/").get_data(as_text=True)) == ["Mine open"]
    assert _row_titles(admin_client.get("/tasks/?view=done").get_data(as_text=True)) == [
        "Mine done"
    ]
    delegated = admin_client.get("/tasks/?view=delegated").get_data(as_text=True)
    assert _row_titles(delegated) == ["Given to Ola"]
    assert "Ola" in delegated


def test_tabs_answer_htmx_with_the_list_alone(admin_client, app):
    with app.app_context():
        make_task("Mine", assignee_id=_admin_id(app))
    response = admin_client.get("/tasks/?view=done", headers=HX)
    body = response.get_data(as_text=True)
    assert "<html" not in body
    assert 'class="tabs"' in body
    assert "Nothing completed yet" in body


def test_my_tasks_paginates(admin_client, app):
    admin_id = _admin_id(app)
    today = _today(app)
    with app.app_context():
        for n in range(55):
            make_task(f"Task {n:02d}", assignee_id=admin_id, due_date=today + timedelta(days=n))
    first = admin_client.get("/tasks/").get_data(as_text=True)
    assert len(_row_titles(first)) == 50
    assert "Page 1 of 2" in first
    second = admin_client.get("/tasks/?page=2").get_data(as_text=True)
    assert _row_titles(second) == [f"Task {n}" for n in range(50, 55)]


def test_empty_my_tasks_is_friendly(admin_client):
    body = admin_client.get("/tasks/").get_data(as_text=True)
    assert 'class="empty"' in body
    assert "All done" in body


# --- edit and delete -------------------------------------------------------------------------


def test_edit_a_task(admin_client, app):
    admin_id = _admin_id(app)
    with app.app_context():
        task_id = make_task("Old title", assignee_id=admin_id).id
    form = admin_client.get(f"/tasks/{task_id}/edit").get_data(as_text=True)
    assert 'value="Old title"' in form
    due = _today(app) + timedelta(days=1)
    response = admin_client.post(
        f"/tasks/{task_id}/edit",
        data={
            "title": "New title",
            "assignee_id": admin_id,
            "due_date": due.isoformat(),
            "details": "",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert (task.title, task.due_date) == ("New title", due)


def test_delete_a_row_with_htmx(admin_client, app):
    with app.app_context():
        task_id = make_task(assignee_id=_admin_id(app)).id
    page = admin_client.get("/tasks/").get_data(as_text=True)
    assert "hx-confirm=" in page  # the browser asks first
    response = admin_client.post(f"/tasks/{task_id}/delete?view=row", headers=HX)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == ""
    assert _task_count(app) == 0


def test_delete_from_the_task_page_redirects_to_my_tasks(admin_client, app):
    with app.app_context():
        task_id = make_task(assignee_id=_admin_id(app)).id
    response = admin_client.post(f"/tasks/{task_id}/delete", headers=HX)
    assert response.headers["HX-Redirect"] == "/tasks/"
    assert _task_count(app) == 0


# --- the card section ------------------------------------------------------------------------


def test_card_section_inline_create_complete_and_undo(admin_client, app):
    admin_id = _admin_id(app)
    with app.app_context():
        client_id = make_client().id
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert 'id="client-tasks"' in card and "No open tasks." in card

    opened = admin_client.get(f"/tasks/clients/{client_id}/new", headers=HX)
    html = opened.get_data(as_text=True)
    assert (
        '<div id="client-tasks">' in html and 'id="tasks-count" class="count" hx-swap-oob' in html
    )
    assert 'name="title"' in html and 'type="date"' in html

    created = admin_client.post(
        f"/tasks/clients/{client_id}/new",
        headers=HX,
        data={"title": "Confirm the date", "assignee_id": admin_id, "due_date": ""},
    )
    html = created.get_data(as_text=True)
    assert "Confirm the date" in html
    assert 'name="title"' not in html  # the form closed again
    with app.app_context():
        task = db.session.scalar(select(Task))
        assert (task.client_id, task.created_by_id) == (client_id, admin_id)
        task_id = task.id

    completed = admin_client.post(f"/tasks/{task_id}/complete?view=card", headers=HX)
    html = completed.get_data(as_text=True)
    assert "Confirm the date” is done" in html
    assert "No open tasks." in html
    assert f"/tasks/{task_id}/reopen?view=card" in html  # undo

    undone = admin_client.post(f"/tasks/{task_id}/reopen?view=card", headers=HX)
    assert 'id="card-task-' in undone.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Task, task_id).is_open


def test_card_inline_form_errors_keep_input(admin_client, app):
    with app.app_context():
        client_id = make_client().id
    response = admin_client.post(
        f"/tasks/clients/{client_id}/new",
        headers=HX,
        data={"title": "", "details": "Bring the contract", "assignee_id": _admin_id(app)},
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Say what needs doing." in html
    assert "Bring the contract" in html
    assert _task_count(app) == 0


def test_card_lists_only_open_tasks_overdue_marked(admin_client, app):
    admin_id = _admin_id(app)
    today = _today(app)
    with app.app_context():
        client_id = make_client().id
        make_task(
            "Late one",
            client_id=client_id,
            assignee_id=admin_id,
            due_date=today - timedelta(days=1),
        )
        finished = make_task("Finished one", client_id=client_id, assignee_id=admin_id)
        finished.status = "done"
        db.session.commit()
    card = admin_client.get(f"/clients/{client_id}").get_data(as_text=True)
    assert "Late one" in card and "Finished one" not in card
    assert 'class="overdue"' in card


# --- scope, permissions, escaping ---------------------------------------------------------------


def test_sales_user_cannot_reach_tasks_of_clients_outside_their_scope(client, app):
    # One signed-in client per test: requests in a test share one app context (and g).
    with app.app_context():
        admin = make_user()
        sales = make_user("sales@example.com", role="sales", name="Sam Sales")
        foreign = make_client(last_name="Foreign", owner_id=admin.id)
        own = make_client(last_name="Own", owner_id=sales.id)
        # Even assigned to them: the client is outside their scope, so the task is too.
        hidden = make_task("Hidden task", client_id=foreign.id, assignee_id=sales.id)
        private = make_task("Admin private", assignee_id=admin.id, created_by=admin)
        make_task("Visible task", client_id=own.id, assignee_id=sales.id)
        ids = {"task": hidden.id, "private": private.id, "client": foreign.id, "admin": admin.id}
    login(client, "sales@example.com")
    listing = client.get("/tasks/").get_data(as_text=True)
    assert _row_titles(listing) == ["Visible task"]
    assert "Hidden task" not in listing
    assert client.get(f"/tasks/{ids['task']}").status_code == 404
    assert client.get(f"/tasks/{ids['private']}").status_code == 404
    assert client.get(f"/tasks/{ids['task']}/edit").status_code == 404
    assert client.post(f"/tasks/{ids['task']}/complete").status_code == 404
    assert client.post(f"/tasks/{ids['task']}/delete").status_code == 404
    assert client.get(f"/tasks/new?client_id={ids['client']}").status_code == 404
    assert client.get(f"/tasks/clients/{ids['client']}").status_code == 404
    assert (
        client.post(
            f"/tasks/clients/{ids['client']}/new", data={"title": "x", "assignee_id": ids["admin"]}
        ).status_code
        == 404
    )
    with app.app_context():
        assert db.session.get(Task, ids["task"]).is_open
    assert _task_count(app) == 3


def test_readonly_role_sees_tasks_but_cannot_change_them(app, client):
    with app.app_context():
        viewer = make_user("viewer@example.com", role="readonly", name="Vera Viewer")
        task_id = make_task("Look only", assignee_id=viewer.id).id
    login(client, "viewer@example.com")
    page = client.get("/tasks/").get_data(as_text=True)
    assert "Look only" in page
    assert "/complete" not in page and "New task" not in page
    assert client.post(f"/tasks/{task_id}/complete").status_code == 403
    assert client.post("/tasks/new", data={"title": "x"}).status_code == 403


def test_html_in_titles_is_escaped_everywhere(admin_client, app):
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    admin_id = _admin_id(app)
    with app.app_context():
        client_id = make_client().id
        task_id = make_task(payload, client_id=client_id, assignee_id=admin_id, details=payload).id
    for url in ("/tasks/", f"/tasks/{task_id}", f"/clients/{client_id}", f"/tasks/{task_id}/edit"):
        body = admin_client.get(url).get_data(as_text=True)
        assert "<script>alert" not in body, url
        assert "<img src=x" not in body, url
        assert "&lt;script&gt;" in body, url
    row = admin_client.post(f"/tasks/{task_id}/complete?view=row", headers=HX)
    assert "<script>alert" not in row.get_data(as_text=True)
