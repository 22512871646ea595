"""Client list benchmark: filter + sort by a custom field + keyset page of 50.

Shapes (all sorted by the number field "Lifetime value", largest first, 80% filled):
  narrow  core field city = 'Plzeň' (~2% of clients)
  broad   custom single-choice field "Segment" = 'S3' (~10% of clients)
  all     no filter (the plain sorted list, also timed as a full HTTP request)
Pages: the first page, a page from the middle of the matching rows (cursor taken at 50%,
hundreds of pages in at 1M) and a page at 90% (the region of empty sort values).

Figures: list_clients() time (capped count + page queries + ORM load), the full request
through the Flask test client (login, query, render), and a baseline: the bare SQL text
query doing the same filter + sort + LIMIT 50 on the same connection, spelled as the app
spells it (NULLS LAST on PostgreSQL; on SQLite `INDEXED BY` the sort index when the filter
is broad, by the same rule as crm.clients.listing).

    .venv/bin/python -m bench.bench_list --backend sqlite --clients 100000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, has_request_context, request
from flask_migrate import upgrade
from sqlalchemy import ColumnElement, func, select, text

from bench import common
from bench.common import Row, Stats
from crm.auth.models import User
from crm.clients import listing
from crm.clients.models import Client
from crm.demo import ensure_demo_fields, generate_clients, insert_clients
from crm.extensions import db
from crm.fields import indexes
from crm.fields.models import CustomField, FieldType
from crm.fields.services import FieldSpec, active_fields, create_field

CITY = "Plzeň"  # one of nine Czech cities: 20% / 9 ~ 2.2% of generated clients
SEGMENT_LABEL = "Segment"
SEGMENTS = [f"S{n}" for n in range(10)]
SEGMENT = "S3"
SORT_LABEL = "Lifetime value"
SHAPES = ("narrow", "broad", "all")
PAGES = (("first", None), ("middle", 0.5), ("tail", 0.9))
BUDGET_MS = 50.0
LOAD_CHUNK = 100_000
PER_PAGE = listing.PER_PAGE
LIST_CLIENTS = listing.list_clients  # the app's own, before the HTTP hook wraps it


@dataclass(frozen=True)
class Keys:
    sort: str
    segment: str


# --- data ------------------------------------------------------------------------------


def _with_segment(
    rows: Iterable[dict[str, Any]], key: str, rng: random.Random
) -> Iterator[dict[str, Any]]:
    for row in rows:
        row["custom"][key] = rng.choice(SEGMENTS)
        yield row


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load(count: int, seed: int) -> None:
    """Schema, admin, demo fields + "Segment" (created through create_field, so their
    expression indexes exist before the rows go in), then `count` clients."""
    upgrade()
    admin_id = common.create_admin()
    fields = ensure_demo_fields()
    fields[SEGMENT_LABEL] = create_field(
        FieldSpec(SEGMENT_LABEL, FieldType.SINGLE_CHOICE, SEGMENTS, personal_data=False)
    )
    db.session.commit()
    keys = {label: f.key for label, f in fields.items()}
    rng = random.Random(seed)
    rows = _with_segment(generate_clients(count, rng, keys, [admin_id]), keys[SEGMENT_LABEL], rng)
    started = time.perf_counter()
    done = 0
    for chunk in _chunks(rows, LOAD_CHUNK):
        common.loading_pragmas(db.session.connection())
        done += insert_clients(iter(chunk))
        db.session.commit()
        print(f"  {done:,} clients in {time.perf_counter() - started:.0f} s", flush=True)
    common.analyze(db.engine)
    db.engine.dispose()
    print(f"  loaded and analysed in {time.perf_counter() - started:.0f} s", flush=True)


def field_keys() -> Keys:
    by_label = {f.label: f.key for f in db.session.scalars(select(CustomField))}
    return Keys(sort=by_label[SORT_LABEL], segment=by_label[SEGMENT_LABEL])


# --- the shapes, as the app's condition and as bare SQL ----------------------------------


def condition(shape: str, keys: Keys) -> ColumnElement[bool] | None:
    if shape == "narrow":
        return Client.city == CITY
    if shape == "broad":
        return indexes.value_expr(keys.segment) == indexes.bind_value(SEGMENT)
    return None


def run_list(
    user: User, req: listing.ListRequest, fields: Any, columns: Any, shape: str, keys: Keys
) -> listing.ListResult:
    """The app's list_clients for this shape."""
    return LIST_CLIENTS(user, req, fields, columns, condition(shape, keys))


def sort_sql(keys: Keys, dialect: str) -> str:
    if dialect == "postgresql":
        return f"(custom -> '{keys.sort}')"
    return f"json_extract(custom, '$.{keys.sort}')"


def filter_sql(shape: str, keys: Keys, dialect: str) -> tuple[list[str], dict[str, Any]]:
    if shape == "narrow":
        return ["city = :city"], {"city": CITY}
    if shape == "broad":
        if dialect == "postgresql":
            clause = f"(custom -> '{keys.segment}') = CAST(:seg AS jsonb)"
            return [clause], {"seg": json.dumps(SEGMENT)}
        return [f"json_extract(custom, '$.{keys.segment}') = :seg"], {"seg": SEGMENT}
    return [], {}


def match_count(shape: str, keys: Keys, dialect: str) -> int:
    where, params = filter_sql(shape, keys, dialect)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return db.session.scalar(text(f"SELECT count(*) FROM clients {clause}"), params) or 0


def sort_index_hint(shape: str, keys: Keys, dialect: str) -> str | None:
    """The `INDEXED BY` hint list_clients adds on SQLite when the filter is broad:
    more matches than the count cap or than sqrt(per page * highest id)."""
    if dialect != "sqlite" or shape == "all":
        return None
    matches = match_count(shape, keys, dialect)
    top = db.session.scalar(select(func.max(Client.id))) or 0
    if matches > listing.COUNT_CAP or matches > math.sqrt(PER_PAGE * top):
        return indexes.index_name(keys.sort)
    return None


def baseline_sql(
    shape: str, keys: Keys, dialect: str, cursor: list[Any] | None, hint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The hand-written query for one page: filter, seek past the cursor, sort, LIMIT 50
    (`hint`: walk this index, as list_clients does on SQLite for a broad filter)."""
    where, params = filter_sql(shape, keys, dialect)
    expr = sort_sql(keys, dialect)
    pg = dialect == "postgresql"
    order = f"{expr} DESC{' NULLS LAST' if pg else ''}, id DESC"
    if cursor is not None and cursor[0] is None:
        where += [f"{expr} IS NULL", "id < :last_id"]
        order = "id DESC"
        params["last_id"] = cursor[1]
    elif cursor is not None:
        value = "CAST(:v AS jsonb)" if pg else ":v"
        where += [f"{expr} <= {value}", f"({expr} < {value} OR id < :last_id)"]
        params |= {"v": json.dumps(cursor[0]) if pg else cursor[0], "last_id": cursor[1]}
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    table = f"clients INDEXED BY {hint}" if hint else "clients"
    return f"SELECT * FROM {table} {clause}ORDER BY {order} LIMIT {PER_PAGE}", params


def page_cursors(shape: str, keys: Keys, dialect: str) -> dict[str, tuple[str | None, int]]:
    """page name -> (after-cursor, page number) for the first, middle and tail pages."""
    total = match_count(shape, keys, dialect)
    sql, params = baseline_sql(shape, keys, dialect, None)
    sql = sql.replace(f"LIMIT {PER_PAGE}", "LIMIT 1 OFFSET :offset")
    sql = sql.replace("SELECT *", "SELECT id")
    out: dict[str, tuple[str | None, int]] = {}
    for name, share in PAGES:
        if share is None:
            out[name] = (None, 1)
            continue
        offset = int(total * share)
        client_id = db.session.scalar(text(sql), params | {"offset": offset})
        client = db.session.get(Client, client_id)
        assert client is not None
        key = listing.row_key(client, f"cf:{keys.sort}")
        out[name] = (listing.encode_cursor(key), offset // PER_PAGE + 2)
    return out


# --- timing ----------------------------------------------------------------------------


@dataclass
class Case:
    shape: str
    page: str
    page_no: int
    cursor: str | None
    hint: str | None  # SQLite: the index the baseline (and list_clients) walks


def list_request(keys: Keys, cursor: str | None) -> listing.ListRequest:
    return listing.ListRequest(sort=f"cf:{keys.sort}", desc=True, after=cursor)


def time_function(case: Case, keys: Keys, user_id: int, runs: int) -> tuple[Stats, list[int]]:
    user = db.session.get(User, user_id)
    assert user is not None and user.role is not None
    fields = active_fields()
    columns = listing.chosen_columns(None, fields)
    req = list_request(keys, case.cursor)
    result: list[listing.ListResult] = []

    def run() -> None:
        result[:] = [run_list(user, req, fields, columns, case.shape, keys)]

    stats = common.measure(run, runs, before=db.session.expunge_all)
    return stats, [c.id for c in result[0].clients]


def time_count(case: Case, keys: Keys, user_id: int, runs: int) -> Stats:
    """The capped count list_clients runs before the page (diagnostic, part of the above)."""
    user = db.session.get(User, user_id)
    assert user is not None
    where = condition(case.shape, keys)
    return common.measure(lambda: listing.count_clients(user, "", where, listing.COUNT_CAP), runs)


def time_baseline(case: Case, keys: Keys, runs: int) -> tuple[Stats, list[int]]:
    conn = db.session.connection()
    cursor = listing.decode_cursor(case.cursor, 2)
    sql, params = baseline_sql(case.shape, keys, conn.dialect.name, cursor, case.hint)
    statement = text(sql)
    rows: list[Any] = []

    def run() -> None:
        rows[:] = conn.execute(statement, params).all()

    return common.measure(run, runs), [r.id for r in rows]


def http_url(case: Case, keys: Keys) -> str:
    url = f"/clients/?sort=cf:{keys.sort}&dir=desc"
    if case.cursor:
        url += f"&after={case.cursor}"
    if case.shape != "all":
        url += f"&bench_shape={case.shape}"
    return url


def install_filter_hook(keys: Keys) -> None:
    """The list route takes no filter yet: let ?bench_shape= pass the shape's condition
    into list_clients, so filtered shapes can be timed as full requests too."""

    def with_shape(
        user: User,
        req: listing.ListRequest,
        fields: Any,
        columns: Any,
        where: ColumnElement[bool] | None = None,
    ) -> listing.ListResult:
        shape = request.args.get("bench_shape") if has_request_context() else None
        return run_list(user, req, fields, columns, shape or "all", keys)

    listing.list_clients = with_shape  # type: ignore[assignment]


def time_http(app: Flask, url: str, runs: int) -> tuple[Stats, int]:
    client = app.test_client()
    common.login(client)
    with app.app_context():
        engine = db.engine
    with common.captured_statements(engine) as seen:
        response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return common.measure(lambda: client.get(url), runs), len(seen)


# --- plans -----------------------------------------------------------------------------


def app_statements(case: Case, keys: Keys, user_id: int) -> list[tuple[str, Any]]:
    """Every (statement, parameters) one list_clients call sends for this case."""
    user = db.session.get(User, user_id)
    assert user is not None
    fields = active_fields()
    columns = listing.chosen_columns(None, fields)
    with common.captured_statements(db.engine) as seen:
        run_list(user, list_request(keys, case.cursor), fields, columns, case.shape, keys)
    return seen


def hint_check(case: Case, keys: Keys, user_id: int) -> str:
    """Whether list_clients' page query carries the INDEXED BY the baseline uses."""
    if case.hint is None:
        return "no hint expected"
    sent = any(f"INDEXED BY {case.hint}" in s for s, _ in app_statements(case, keys, user_id))
    return "app sends INDEXED BY" if sent else "app does NOT send INDEXED BY"


def print_plans(case: Case, keys: Keys, user_id: int) -> None:
    """EXPLAIN every statement list_clients sends for this case."""
    seen = app_statements(case, keys, user_id)
    conn = db.session.connection()
    print(f"\n=== plans: {case.shape} / {case.page} page (#{case.page_no}) ===")
    for statement, parameters in seen:
        print(f"-- {common.one_line(statement)[:400]}")
        print(f"-- params: {parameters}")
        print(common.explain(conn, statement, parameters))
    cursor = listing.decode_cursor(case.cursor, 2)
    sql, params = baseline_sql(case.shape, keys, conn.dialect.name, cursor, case.hint)
    print(f"-- baseline: {sql}  {params}")
    print(common.explain_text(conn, sql, params))


# --- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the generated database when it exists (and keep it)",
    )
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="build the database and stop (then run again with --keep)",
    )
    parser.add_argument("--no-plans", action="store_true", help="skip the EXPLAIN output")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


def prepare(app: Flask, url: str, args: argparse.Namespace, reuse: bool) -> None:
    with app.app_context():
        if reuse:
            print(f"reusing {url}", flush=True)
            return
        print(f"generating {args.clients:,} clients into {url}", flush=True)
        load(args.clients, args.seed)


def describe_data() -> dict[str, Any]:
    dialect = db.session.connection().dialect.name
    keys = field_keys()
    total = db.session.scalar(select(func.count(Client.id))) or 0
    shares = {}
    for shape in ("narrow", "broad"):
        where, params = filter_sql(shape, keys, dialect)
        n = db.session.scalar(text(f"SELECT count(*) FROM clients WHERE {where[0]}"), params) or 0
        shares[shape] = f"{n:,} ({100 * n / max(total, 1):.1f}%)"
    empty_sql = f"SELECT count(*) FROM clients WHERE {sort_sql(keys, dialect)} IS NULL"
    empty = db.session.scalar(text(empty_sql))
    shares["empty sort value"] = f"{empty:,}"
    print(
        f"clients: {total:,}; narrow (city = {CITY}): {shares['narrow']}; "
        f"broad ({SEGMENT_LABEL} = {SEGMENT}): {shares['broad']}; "
        f"empty {SORT_LABEL}: {shares['empty sort value']}",
        flush=True,
    )
    return {"clients": total, **shares}


def run_cases(app: Flask, args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    with app.app_context():
        backend = db.session.connection().dialect.name
        meta = describe_data()
        keys = field_keys()
        user_id = db.session.scalar(select(User.id).where(User.email == common.ADMIN_EMAIL))
        assert user_id is not None
        cases = [
            Case(shape, page, no, cursor, sort_index_hint(shape, keys, backend))
            for shape in SHAPES
            for page, (cursor, no) in page_cursors(shape, keys, backend).items()
        ]
        if not args.no_plans:
            for case in cases:
                print_plans(case, keys, user_id)
    install_filter_hook(keys)
    rows: list[Row] = []
    size = args.clients
    for case in cases:
        label = f"{case.page} (#{case.page_no})"
        with app.app_context():
            base, base_ids = time_baseline(case, keys, args.runs)
            db.session.rollback()
            func_stats, ids = time_function(case, keys, user_id, args.runs)
            db.session.rollback()
            count = time_count(case, keys, user_id, args.runs)
            hinted = hint_check(case, keys, user_id)
            db.session.rollback()
        same = "same ids" if ids == base_ids else "DIFFERENT ids"
        http, statements = time_http(app, http_url(case, keys), args.runs)
        common_args = (case.shape, label, size, backend)
        rows.append(
            Row(
                *common_args,
                "list_clients()",
                func_stats.median,
                func_stats.p95,
                base.median,
                base.p95,
                BUDGET_MS,
                {"baseline": same, "hint": case.hint, "hint check": hinted},
            )
        )
        rows.append(
            Row(
                *common_args,
                "HTTP GET /clients/",
                http.median,
                http.p95,
                base.median,
                base.p95,
                BUDGET_MS,
                {"statements": statements},
            )
        )
        rows.append(Row(*common_args, "  count part", count.median, count.p95, None, None, None))
        print(
            f"{case.shape:6} {label:14} fn p95 {func_stats.p95:7.2f}  http p95 {http.p95:7.2f}  "
            f"count p95 {count.p95:7.2f}  base p95 {base.p95:7.2f}  ({same}, "
            f"{statements} statements per request; {hinted})",
            flush=True,
        )
    return rows, meta


def main() -> None:
    args = parse_args()
    url = common.database_url(args.backend, f"list_{args.clients}")
    reuse = args.keep and common.database_exists(url)
    if not reuse:
        common.create_database(url)
    app = common.make_app(url)
    prepare(app, url, args, reuse)
    if args.generate_only:
        return
    rows, meta = run_cases(app, args)
    print()
    common.print_table(rows)
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, rows, meta | vars(args))
    with app.app_context():
        db.engine.dispose()
    if args.drop:
        common.drop_database(url)


if __name__ == "__main__":
    main()
