"""CSV import benchmark: `crm.mailing.importer.import_clients` of a --rows CSV (default
100,000) with Polish, German and Czech names, streets and cities with diacritics, into
a new mailing list on the consent basis, with a per-row error report.

The file has a semicolon-separated header in Polish (the mapping is guessed from it),
phones written as people type them, two custom fields (a date and a choice), about 1%
of rows with a broken email and 0.5% repeating an earlier address. Before each run the
database is created afresh (untimed) and 10% of the file's clients are already in it,
so matching by email is part of the work.

Figures per run: the whole import with its commit (reading and validating the file,
chunked set-based inserts of clients, subscriptions, consent events and states,
subscription events) as wall time and as CPU time of the importing process (the
database server's work shows in the wall time only), and the counts. Median and p95
of the wall time over --runs (default 3; no warm-up: each run is a full import into a
fresh database).

    .venv/bin/python -m bench.bench_import --backend sqlite
    .venv/bin/python -m bench.bench_import --backend postgresql
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import time
from pathlib import Path

from flask_migrate import upgrade

from bench import common
from bench.common import Row
from crm.demo import ensure_demo_fields, generate_clients, insert_clients
from crm.extensions import db
from crm.mailing import importer

BUDGET_MS = 60_000.0
HEADER = [
    "Imię",
    "Nazwisko",
    "E-mail",
    "Telefon",
    "Ulica",
    "Kod pocztowy",
    "Miasto",
    "Kraj",
    "Customer since",
    "Preferred contact",
]


def _spaced(phone: str) -> str:
    """+48601234567 as typed: '+48 601 234 567'."""
    body = phone[3:] if phone.startswith(("+48", "+49")) else phone[4:]
    prefix = phone[: len(phone) - len(body)]
    return prefix + " " + " ".join(body[i : i + 3] for i in range(0, len(body), 3))


def write_csv(path: Path, rows: int, seed: int) -> list[dict[str, object]]:
    """The file, and the generated clients (10% of them are preloaded before a run)."""
    rng = random.Random(seed)
    keys = {
        label: label
        for label in (
            "Contract",
            "Lifetime value",
            "Customer since",
            "Preferred contact",
            "Interests",
            "Birthday",
        )
    }
    clients = list(generate_clients(rows, rng, keys, [None]))
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        for n, c in enumerate(clients):
            email = str(c["email"])
            draw = rng.random()
            if draw < 0.01:
                email = email.replace("@", " at ")
            elif draw < 0.015 and n:
                email = str(clients[rng.randrange(n)]["email"])
            custom = c["custom"]
            assert isinstance(custom, dict)
            writer.writerow(
                [
                    c["first_name"],
                    c["last_name"],
                    email,
                    _spaced(str(c["phone"])),
                    c["street"],
                    c["postal_code"],
                    c["city"],
                    c["country"],
                    custom.get("Customer since", ""),
                    custom.get("Preferred contact", ""),
                ]
            )
    return clients


def prepare(url: str, preload: list[dict[str, object]]) -> None:
    """A fresh database with the schema, the demo fields and the preloaded clients."""
    common.create_database(url)
    app = common.make_app(url)
    with app.app_context():
        upgrade()
        fields = ensure_demo_fields()
        db.session.commit()
        keys = {label: f.key for label, f in fields.items()}
        rows = []
        for c in preload:
            custom = c["custom"]
            assert isinstance(custom, dict)
            rows.append(c | {"custom": {keys[k]: v for k, v in custom.items()}})
        insert_clients(iter(rows))
        db.session.commit()
        db.engine.dispose()


def run_once(url: str, path: Path) -> tuple[float, float, importer.ImportResult]:
    """Wall time and this process's CPU time (ms) of one import with its commit; the
    database server's own work shows in the wall time only."""
    app = common.make_app(url)
    with app.app_context():
        started = time.perf_counter()
        cpu = time.process_time()
        with importer.open_text(path) as stream:
            result = importer.import_clients(
                stream, "Newsletter import", "consent", source_name=path.name
            )
        db.session.commit()
        elapsed = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu) * 1000
        report = importer.error_report(result.errors)
        path.with_suffix(".errors.csv").write_text(report, encoding="utf-8")
        db.engine.dispose()
    return elapsed, cpu_ms, result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    url = common.database_url(args.backend, "import")
    common.DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = common.DATA_DIR / f"import-{args.rows}.csv"
    clients = write_csv(path, args.rows, args.seed)
    preload = clients[: args.rows // 10]
    print(f"{path.name}: {args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB", flush=True)
    samples = []
    result = None
    for n in range(args.runs):
        prepare(url, preload)
        elapsed, cpu_ms, result = run_once(url, path)
        samples.append(elapsed)
        print(
            f"  run {n + 1}: {elapsed / 1000:.1f} s (CPU of this process {cpu_ms / 1000:.1f} s)"
            f" {result.as_dict()} — {common.load_note()}",
            flush=True,
        )
    common.drop_database(url)
    samples.sort()
    p95 = samples[max(0, math.ceil(0.95 * len(samples)) - 1)]
    assert result is not None
    row = Row(
        shape="csv import",
        page="-",
        size=args.rows,
        backend=args.backend,
        measured="import_clients + commit",
        median=statistics.median(samples),
        p95=p95,
        base_median=None,
        base_p95=None,
        budget=BUDGET_MS,
        extra=result.as_dict(),
    )
    common.print_table([row])
    print(common.load_note())
    if args.json_out:
        common.write_json(args.json_out, [row], {"runs": args.runs, "seed": args.seed})


if __name__ == "__main__":
    main()
