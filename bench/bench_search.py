"""Search benchmark: the query language on the client list, against hand-written SQL.

Every shape is a query typed into the list's search box (`q`), sorted by the number
field "Lifetime value", largest first, 50 per page:
  narrow  city = "Plzeň" AND "Contract" < 1            (core ~2.2%, AND a custom field: ~1.4%)
  broad   "Customer since" >= 2024-05-22               (a custom-field range: ~10%)
  or      "Birthday" < 1955-01-01 OR "Customer since" < 2015-05-01   (two custom fields: ~4.8%)
Pages: first, middle (the page after the row at 50% of the matches) and tail (at 90%,
among the empty sort values), as in bench_list.

Figures per shape and page: the text path (query_condition(text) -> list_clients), the
full HTTP GET /clients/?q=... through the Flask test client, and the same as an htmx
request (the list part only, as the pager and sort links ask for it). Per shape: the
count the list shows (stops after listing.COUNT_CAP), a count that stops after 10,000,
and the exact count (cap=0, also as GET /clients/count, the list's "count all").
Each is compared, in the same run, with the bare SQL for the same filter, sort and LIMIT
spelled by hand to use the indexes (NULLS LAST on PostgreSQL; on SQLite `INDEXED BY` the
sort index when the filter is broad, by the rule crm.clients.listing applies).

The data is bench_list's (same generator, same database names), so a database generated
by either script serves both:

    .venv/bin/python -m bench.bench_search --backend sqlite --clients 1000000 --keep
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import ColumnElement, func, select, text

from bench import bench_list, common
from bench.common import Row, Stats
from crm.auth.models import User
from crm.clients import listing
from crm.clients.models import Client
from crm.extensions import db
from crm.fields.models import CustomField
from crm.fields.services import active_fields
from crm.search.services import query_condition

PAGE_BUDGET_MS = bench_list.BUDGET_MS  # p95, every page, at 100k and 1M
COUNT_BUDGET_MS = 200.0  # p95 of a count at 1M (DESIGN.md, Budgets)
PER_PAGE = listing.PER_PAGE
# The list's own count (COUNT_CAP), a count that stops after 10,000 (the budget allows
# "10,000+" where an exact count would take too long) and the exact count.
COUNTS = (
    (f"<= {listing.COUNT_CAP:,} (list)", listing.COUNT_CAP),
    ("<= 10,000", 10_000),
    ("exact", 0),
)
CITY = bench_list.CITY
SINCE_BROAD = "2024-05-22"  # "Customer since" is 70% filled over 4,000 days from 2015
SINCE_EARLY = "2015-05-01"  # the first 120 days: ~2.1%
BORN_BEFORE = "1955-01-01"  # "Birthday": 30% filled, years 1950-2004: ~2.7%

LABELS = {
    "sort": bench_list.SORT_LABEL,
    "contract": "Contract",
    "since": "Customer since",
    "birthday": "Birthday",
}


@dataclass(frozen=True)
class Shape:
    name: str
    query: str  # what a user types into the search box
    describe: str


SHAPES = [
    Shape("narrow", f'city = "{CITY}" AND "Contract" < 1', "core ~2%, AND custom checkbox"),
    Shape("broad", f'"Customer since" >= {SINCE_BROAD}', "custom date range ~10%"),
    Shape(
        "or",
        f'"Birthday" < {BORN_BEFORE} OR "Customer since" < {SINCE_EARLY}',
        "OR of two custom date ranges",
    ),
]


def field_keys() -> dict[str, str]:
    by_label = {f.label: f.key for f in db.session.scalars(select(CustomField))}
    return {name: by_label[label] for name, label in LABELS.items()}


# --- the hand-written SQL ----------------------------------------------------------------


def _value(keys: dict[str, str], name: str, pg: bool) -> str:
    """The indexed expression of a custom field, as the indexes are built."""
    key = keys[name]
    return f"(custom -> '{key}')" if pg else f"json_extract(custom, '$.{key}')"


def filter_sql(shape: str, keys: dict[str, str], dialect: str) -> tuple[str, dict[str, Any]]:
    """The shape's WHERE clause as a careful engineer writes it against these indexes:
    the indexed expression compared with a bound value (JSONB on PostgreSQL)."""
    pg = dialect == "postgresql"

    def bound(name: str) -> str:
        return f"CAST(:{name} AS jsonb)" if pg else f":{name}"

    def value(v: Any) -> Any:
        return json.dumps(v) if pg else v

    if shape == "narrow":
        contract = _value(keys, "contract", pg)
        clause = f"city = :city AND ({contract} IS NULL OR {contract} = {bound('zero')})"
        return clause, {"city": CITY, "zero": value(0)}
    since = _value(keys, "since", pg)
    if shape == "broad":
        return f"{since} >= {bound('since')}", {"since": value(SINCE_BROAD)}
    birthday = _value(keys, "birthday", pg)
    clause = f"({birthday} < {bound('born')} OR {since} < {bound('early')})"
    return clause, {"born": value(BORN_BEFORE), "early": value(SINCE_EARLY)}


def page_sql(
    shape: str,
    keys: dict[str, str],
    dialect: str,
    cursor: list[Any] | None,
    hint: str | None,
    limit: int = PER_PAGE,
) -> tuple[str, dict[str, Any]]:
    """One page: filter, seek past the cursor, ORDER BY the sort index, LIMIT. Empty sort
    values come last (descending), as their own region ordered by id."""
    where, params = filter_sql(shape, keys, dialect)
    pg = dialect == "postgresql"
    expr = _value(keys, "sort", pg)
    clauses = [where]
    order = f"{expr} DESC{' NULLS LAST' if pg else ''}, id DESC"
    if cursor is not None and cursor[0] is None:
        clauses += [f"{expr} IS NULL", "id < :last_id"]
        order = "id DESC"
        params["last_id"] = cursor[1]
    elif cursor is not None:
        v = "CAST(:v AS jsonb)" if pg else ":v"
        clauses += [f"{expr} <= {v}", f"({expr} < {v} OR id < :last_id)"]
        params |= {"v": json.dumps(cursor[0]) if pg else cursor[0], "last_id": cursor[1]}
    table = f"clients INDEXED BY {hint}" if hint else "clients"
    sql = f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT {limit}"
    return sql, params


def count_sql(
    shape: str, keys: dict[str, str], dialect: str, cap: int
) -> tuple[str, dict[str, Any]]:
    where, params = filter_sql(shape, keys, dialect)
    if cap:
        return (
            f"SELECT count(*) FROM (SELECT 1 FROM clients WHERE {where} LIMIT {cap + 1}) t",
            params,
        )
    return f"SELECT count(*) FROM clients WHERE {where}", params


def sort_index_hint(matches: int, keys: dict[str, str], dialect: str) -> str | None:
    """SQLite: walk the sort index when the filter is broad, by listing's rule (more
    matches than the count cap, or than sqrt(page size x highest id))."""
    if dialect != "sqlite":
        return None
    top = db.session.scalar(select(func.max(Client.id))) or 0
    if matches > listing.COUNT_CAP or matches > math.sqrt(PER_PAGE * top):
        return f"ix_cf_{keys['sort']}"
    return None


def page_cursors(shape: str, keys: dict[str, str], dialect: str, matches: int) -> list[Case]:
    """The first, middle and tail pages of a shape, with their after-cursors."""
    cases = []
    for name, share in bench_list.PAGES:
        if share is None:
            cases.append(Case(shape, name, 1, None))
            continue
        offset = int(matches * share)
        sql, params = page_sql(shape, keys, dialect, None, None, limit=1)
        sql = sql.replace("SELECT *", "SELECT id") + " OFFSET :offset"
        client = db.session.get(Client, db.session.scalar(text(sql), params | {"offset": offset}))
        assert client is not None
        key = listing.row_key(client, f"cf:{keys['sort']}")
        cases.append(Case(shape, name, offset // PER_PAGE + 2, listing.encode_cursor(key)))
    return cases


# --- the app's side ----------------------------------------------------------------------


@dataclass
class Case:
    shape: str
    page: str
    page_no: int
    cursor: str | None


def shape_query(shape: str) -> str:
    return next(s.query for s in SHAPES if s.name == shape)


def list_url(shape: str, keys: dict[str, str], cursor: str | None) -> str:
    params = {"q": shape_query(shape), "sort": f"cf:{keys['sort']}", "dir": "desc"}
    if cursor:
        params["after"] = cursor
    return f"/clients/?{urlencode(params)}"


def count_url(shape: str, cap: str | None = None) -> str:
    """The list's "count all" (cap None), or with cap="list" the list's own count, which
    PostgreSQL loads right after the page."""
    params = {"q": shape_query(shape)} | ({"cap": cap} if cap else {})
    return f"/clients/count?{urlencode(params)}"


def run_list(user: User, shape: str, keys: dict[str, str], cursor: str | None) -> list[int]:
    """What the list view does with `q`: text -> condition -> list_clients."""
    fields = active_fields()
    columns = listing.chosen_columns(None, fields)
    req = listing.ListRequest(sort=f"cf:{keys['sort']}", desc=True, after=cursor)
    where = query_condition(shape_query(shape))
    result = listing.list_clients(user, req, fields, columns, where=where)
    return [c.id for c in result.clients]


def run_count(user: User, shape: str, cap: int) -> int:
    where: ColumnElement[bool] | None = query_condition(shape_query(shape))
    return listing.count_clients(user, "", where, cap)


def measure_sql(sql: str, params: dict[str, Any], runs: int) -> tuple[Stats, list[Any]]:
    conn = db.session.connection()
    statement = text(sql)
    rows: list[Any] = []

    def run() -> None:
        rows[:] = conn.execute(statement, params).all()

    return common.measure(run, runs), rows


ROW_LINK = re.compile(r'href="/clients/(\d+)"')


HTMX = {"HX-Request": "true"}  # the pager's and sort links' request: the list part only


def measure_http(
    app: Flask, url: str, runs: int, headers: dict[str, str] | None = None
) -> tuple[Stats, str]:
    client = app.test_client()
    common.login(client)
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    if "field-error" in response.text:
        raise RuntimeError(f"GET {url}: the query was refused")
    return common.measure(lambda: client.get(url, headers=headers), runs), response.text


# --- plans -------------------------------------------------------------------------------


def print_plans(
    title: str, run: Callable[[], Any], baseline: tuple[str, dict[str, Any]] | None
) -> None:
    """EXPLAIN every statement the app sends for `run`, then the hand-written one."""
    with common.captured_statements(db.engine) as seen:
        run()
    conn = db.session.connection()
    print(f"\n=== plans: {title} ===")
    for statement, parameters in seen:
        if not statement.lstrip().upper().startswith("SELECT"):
            continue
        print(f"-- {common.one_line(statement)[:600]}")
        print(f"-- params: {parameters}")
        print(common.explain(conn, statement, parameters))
    if baseline is not None:
        sql, params = baseline
        print(f"-- baseline: {sql}  {params}")
        print(common.explain_text(conn, sql, params))


# --- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep", action="store_true", help="reuse the generated database when it exists"
    )
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument(
        "--shapes",
        default=",".join(s.name for s in SHAPES),
        help="comma-separated subset of: " + ", ".join(s.name for s in SHAPES),
    )
    parser.add_argument("--no-plans", action="store_true", help="skip the EXPLAIN output")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


@dataclass
class Prepared:
    keys: dict[str, str]
    user_id: int
    matches: dict[str, int]
    hints: dict[str, str | None]
    cases: list[Case]


def prepare(shapes: list[str]) -> Prepared:
    """Field keys, the admin, the true match counts, the baseline's hint and the pages."""
    dialect = db.session.connection().dialect.name
    keys = field_keys()
    user_id = db.session.scalar(select(User.id).where(User.email == common.ADMIN_EMAIL))
    assert user_id is not None
    total = db.session.scalar(select(func.count(Client.id))) or 0
    matches, hints, cases = {}, {}, []
    for shape in shapes:
        sql, params = count_sql(shape, keys, dialect, 0)
        matches[shape] = db.session.scalar(text(sql), params) or 0
        hints[shape] = sort_index_hint(matches[shape], keys, dialect)
        cases += page_cursors(shape, keys, dialect, matches[shape])
        share = 100 * matches[shape] / max(total, 1)
        print(
            f"{shape:6} {shape_query(shape)!r}: {matches[shape]:,} of {total:,} ({share:.1f}%)"
            f"; baseline hint: {hints[shape] or 'none'}",
            flush=True,
        )
    return Prepared(keys, user_id, matches, hints, cases)


def plans(prep: Prepared, shapes: list[str]) -> None:
    dialect = db.session.connection().dialect.name
    user = db.session.get(User, prep.user_id)
    assert user is not None
    for case in prep.cases:
        cursor = listing.decode_cursor(case.cursor, 2)
        base = page_sql(case.shape, prep.keys, dialect, cursor, prep.hints[case.shape])
        print_plans(
            f"{case.shape} / {case.page} page (#{case.page_no})",
            lambda c=case: run_list(user, c.shape, prep.keys, c.cursor),
            base,
        )
    for shape in shapes:
        base = count_sql(shape, prep.keys, dialect, 0)
        print_plans(f"{shape} / exact count", lambda s=shape: run_count(user, s, 0), base)


def time_pages(app: Flask, prep: Prepared, runs: int, size: int) -> list[Row]:
    rows: list[Row] = []
    for case in prep.cases:
        label = f"{case.page} (#{case.page_no})"
        with app.app_context():
            backend = db.session.connection().dialect.name
            cursor = listing.decode_cursor(case.cursor, 2)
            sql, params = page_sql(case.shape, prep.keys, backend, cursor, prep.hints[case.shape])
            base, base_rows = measure_sql(sql, params, runs)
            base_ids = [r.id for r in base_rows]
            db.session.rollback()
            user = db.session.get(User, prep.user_id)
            # Loaded now: the timed runs empty the identity map, as a new request would.
            assert user is not None and user.role is not None
            ids: list[int] = []

            def run(c: Case = case, u: User = user, out: list[int] = ids) -> None:
                out[:] = run_list(u, c.shape, prep.keys, c.cursor)

            fn = common.measure(run, runs, before=db.session.expunge_all)
            db.session.rollback()
        url = list_url(case.shape, prep.keys, case.cursor)
        http, html = measure_http(app, url, runs)
        part, part_html = measure_http(app, url, runs, HTMX)
        http_ids = [int(n) for n in ROW_LINK.findall(html)]
        part_ids = [int(n) for n in ROW_LINK.findall(part_html)]
        same = "same ids" if ids == base_ids == http_ids == part_ids else "DIFFERENT ids"
        args = (case.shape, label, size, backend)
        rows += [
            Row(*args, "query -> list_clients()", fn.median, fn.p95, base.median, base.p95,
                PAGE_BUDGET_MS, {"baseline": same, "ratio": fn.median / base.median}),
            Row(*args, "HTTP GET /clients/?q=", http.median, http.p95, base.median, base.p95,
                PAGE_BUDGET_MS),
            Row(*args, "  same, htmx (list part)", part.median, part.p95, base.median,
                base.p95, PAGE_BUDGET_MS),
        ]  # fmt: skip
        print(
            f"{case.shape:6} {label:14} fn {fn.median:7.2f} / {fn.p95:7.2f} "
            f"(x{fn.median / base.median:.1f} the baseline)  "
            f"http {http.median:7.2f} / {http.p95:7.2f}  htmx {part.median:7.2f} / "
            f"{part.p95:7.2f}  base {base.median:6.2f} / "
            f"{base.p95:6.2f}  ({same}, {len(base_ids)} rows)",
            flush=True,
        )
    return rows


def time_counts(app: Flask, prep: Prepared, shapes: list[str], runs: int, size: int) -> list[Row]:
    rows: list[Row] = []
    for shape in shapes:
        with app.app_context():
            backend = db.session.connection().dialect.name
            user = db.session.get(User, prep.user_id)
            assert user is not None
            compiled = common.measure(lambda s=shape: query_condition(shape_query(s)), runs)
            found: dict[str, int] = {}
            for name, cap in COUNTS:
                base, base_rows = measure_sql(*count_sql(shape, prep.keys, backend, cap), runs)

                def run(
                    s: str = shape,
                    c: int = cap,
                    n: str = name,
                    u: User = user,
                    out: dict[str, int] = found,
                ) -> None:
                    out[n] = run_count(u, s, c)

                fn = common.measure(run, runs)
                db.session.rollback()
                ok = found[name] == base_rows[0][0]
                measured = f"count {name} ({'=' if ok else 'DIFFERENT: '}{found[name]:,})"
                rows.append(
                    Row(shape, "-", size, backend, measured, fn.median, fn.p95, base.median,
                        base.p95, COUNT_BUDGET_MS)
                )  # fmt: skip
        for cap, limit, label in (
            ("list", listing.COUNT_CAP, "cap=list: the list's count"),
            (None, listing.EXACT_COUNT_CAP, "count all"),
        ):
            http, html = measure_http(app, count_url(shape, cap), runs)
            text_shown = html.split(">", 1)[1]
            shown = int(re.sub(r"\D", "", text_shown.split("·")[0]) or -1)
            expected = min(found["exact"], limit)
            capped = found["exact"] > limit
            says_more = "ore than" in text_shown  # "More than" / "more than"
            ok = "=" if shown == expected and says_more == capped else "DIFFERENT: "
            rows.append(
                Row(shape, "-", size, backend,
                    f"HTTP GET /clients/count, {label} ({ok}{'>' if capped else ''}{shown:,})",
                    http.median, http.p95, None, None, COUNT_BUDGET_MS)
            )  # fmt: skip
        rows.append(
            Row(shape, "-", size, backend, "  parse + compile q", compiled.median, compiled.p95,
                None, None, None)
        )  # fmt: skip
        print(
            f"{shape:6} counts: {', '.join(f'{n} {v:,}' for n, v in found.items())}; "
            f"HTTP count all p95 {http.p95:.2f}; parse + compile p95 {compiled.p95:.2f}",
            flush=True,
        )
    return rows


def main() -> None:
    args = parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - {s.name for s in SHAPES}
    if unknown:
        raise SystemExit(f"unknown shapes: {', '.join(sorted(unknown))}")
    url = common.database_url(args.backend, f"list_{args.clients}")
    reuse = args.keep and common.database_exists(url)
    if not reuse:
        common.create_database(url)
    app = common.make_app(url)
    bench_list.prepare(app, url, args, reuse)
    if reuse:
        with app.app_context():
            upgrade()  # a database generated before the latest migrations (saved filters)
            db.engine.dispose()
    print(common.load_note(), flush=True)
    with app.app_context():
        prep = prepare(shapes)
        if not args.no_plans:
            plans(prep, shapes)
        db.session.rollback()
    rows = time_pages(app, prep, args.runs, args.clients)
    rows += time_counts(app, prep, shapes, args.runs, args.clients)
    print()
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        meta = {"matches": prep.matches, "queries": {s.name: s.query for s in SHAPES}}
        common.write_json(args.json_out, rows, meta | vars(args))
    with app.app_context():
        db.engine.dispose()
    if args.drop:
        common.drop_database(url)


if __name__ == "__main__":
    main()
