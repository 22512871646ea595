"""Data export benchmark: one client with --emails sent messages (10 000) and --notes
notes (1 000), plus consents, a list subscription, tasks, deals and files, exported
into a zip (xlsx + .eml + files + JSON) the way the worker does it (`run_export`: the
job row claimed, progress committed as it goes, the file renamed into place).

Every run is a fresh process, so the memory figure is the peak RSS of a process that
did one export (VmHWM from /proc/self/status, which counts the interpreter and the imported app
too: "at start" shows that part). Baseline, in the same run: a process without the app
that reads the same rows with bare SQL (the messages' bytes, the notes) and writes them
to a zip, the .eml files and one CSV of notes.

    .venv/bin/python -m bench.bench_export --backend sqlite
    .venv/bin/python -m bench.bench_export --backend postgresql --runs 7
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from bench import common

BUDGET_S = 5.0
BUDGET_MB = 200.0
STEM = "export"


# --- data ------------------------------------------------------------------------------


def _message(n: int, to: str, sent_at: datetime) -> bytes:
    """A campaign-like message: plain text and HTML, headers as sent, ~3 KB."""
    message = EmailMessage()
    message["From"] = "Salon Łódź <biuro@example.pl>"
    message["To"] = f"Jürgen Müller <{to}>"
    message["Subject"] = f"Nowości z Łodzi nr {n}: jesień u Dvořáka"
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = f"<bench-{n}@example.pl>"
    message["List-Unsubscribe"] = f"<https://crm.example.com/u/{n:08d}abcdef>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = (
        f"Dzień dobry Jürgen,\n\nw tym tygodniu (nr {n}) zapraszamy na zabiegi w Łodzi. "
        "Šťastný nový rok! " * 8
    )
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return message.as_bytes()


def generate(url: str, emails: int, notes: int) -> int:
    """A fresh database with the rich client; returns its id."""
    from flask_migrate import upgrade
    from sqlalchemy import insert

    from crm.campaigns.models import SentMessage
    from crm.extensions import db
    from crm.notes.models import Note

    common.create_database(url)
    app = common.make_app(url)
    with app.test_request_context():
        upgrade()
        common.create_admin()
        from tests.privacy.export_data import make_demo_client

        demo = make_demo_client("bench")
        client_id = demo.client_id
        to = f"jurgen.bench.{client_id}@example.de"
        start = datetime(2024, 1, 1, tzinfo=UTC)
        for first in range(0, emails, 1000):
            rows = []
            for n in range(first, min(emails, first + 1000)):
                sent_at = start + timedelta(hours=n)
                rows.append(
                    {
                        "client_id": client_id,
                        "subject": f"Nowości z Łodzi nr {n}: jesień u Dvořáka",
                        "email": to,
                        "message_id": f"<bench-{n}@example.pl>",
                        "sent_at": sent_at,
                        "raw": zlib.compress(_message(n, to, sent_at)),
                    }
                )
            db.session.execute(insert(SentMessage), rows)
        db.session.execute(
            insert(Note),
            [
                {
                    "client_id": client_id,
                    "kind": "note" if n % 3 else "call",
                    "body": f"Notatka {n}: rozmowa o wizycie w Łodzi, pani Šťastná poleca. " * 3,
                    "occurred_at": start + timedelta(hours=7 * n),
                    "created_at": start + timedelta(hours=7 * n),
                }
                for n in range(notes)
            ],
        )
        db.session.commit()
    common.analyze(_engine(app))
    return client_id


def _engine(app: Any) -> Any:
    from crm.extensions import db

    with app.app_context():
        return db.engine


# --- one measured process --------------------------------------------------------------


def _rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss over from the parent at fork (here the generating process), while
    VmHWM belongs to the address space that exec made for this process."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_export(url: str, client_id: int, out_dir: Path) -> dict[str, Any]:
    """The export as the worker runs it, timed from the job row's creation."""
    from crm.extensions import db
    from crm.privacy.export import run_export
    from crm.privacy.models import DataExport

    app = common.make_app(url)
    app.config["CRM_EXPORT_DIR"] = str(out_dir)
    with app.test_request_context():
        db.session.execute(db.text("SELECT 1"))  # connect before timing
        at_start = _rss_mb()
        start = time.perf_counter()
        export = DataExport(client_id=client_id, requested_by_id=None)
        db.session.add(export)
        db.session.commit()
        status = run_export(export.id)
        seconds = time.perf_counter() - start
        row = db.session.get(DataExport, export.id)
        size = row.size
        (out_dir / row.file_name).unlink()
        db.session.delete(row)
        db.session.commit()
    if status != "done":
        raise SystemExit(f"export ended {status}")
    return {"seconds": seconds, "rss_mb": _rss_mb(), "rss_start_mb": at_start, "size": size}


def child_baseline(url: str, client_id: int, out_dir: Path) -> dict[str, Any]:
    """The same rows with bare SQL into a zip, without the app."""
    import sqlalchemy as sa

    from crm.config import normalise_database_url

    engine = sa.create_engine(normalise_database_url(url))
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        at_start = _rss_mb()
        start = time.perf_counter()
        target = out_dir / "baseline.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            result = conn.execution_options(yield_per=500).execute(
                sa.text(
                    "SELECT id, sent_at, subject, raw FROM sent_messages"
                    " WHERE client_id = :c ORDER BY sent_at, id"
                ),
                {"c": client_id},
            )
            for row in result:
                archive.writestr(f"emails/{row.id}.eml", zlib.decompress(row.raw))
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for row in conn.execute(
                sa.text(
                    "SELECT occurred_at, kind, body FROM notes WHERE client_id = :c"
                    " ORDER BY occurred_at, id"
                ),
                {"c": client_id},
            ):
                writer.writerow([row.occurred_at, row.kind, row.body])
            archive.writestr("notes.csv", buffer.getvalue())
        seconds = time.perf_counter() - start
        size = target.stat().st_size
        target.unlink()
    engine.dispose()
    return {"seconds": seconds, "rss_mb": _rss_mb(), "rss_start_mb": at_start, "size": size}


def _spawn(mode: str, backend: str, client_id: int, out_dir: Path) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.bench_export", "--backend", backend]
    args += ["--child", mode, "--client", str(client_id), "--out-dir", str(out_dir)]
    # Our own interpreter and module, arguments built here: nothing untrusted.
    done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return statistics.median(ordered), p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--notes", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (after one warm-up)")
    parser.add_argument("--keep", action="store_true", help="reuse a generated database")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--child", choices=["export", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    url = common.database_url(args.backend, STEM)

    if args.child:
        run = child_export if args.child == "export" else child_baseline
        print(json.dumps(run(url, args.client, args.out_dir)))
        return

    id_file = common.DATA_DIR / f"{STEM}-{args.backend}.client"
    if args.keep and common.database_exists(url) and id_file.exists():
        client_id = int(id_file.read_text())
        print(f"reusing {url} (client {client_id})")
    else:
        started = time.perf_counter()
        client_id = generate(url, args.emails, args.notes)
        id_file.write_text(str(client_id))
        print(f"generated {url} in {time.perf_counter() - started:.1f} s (client {client_id})")

    results: dict[str, list[dict[str, Any]]] = {"export": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="crm-bench-export-") as scratch:
        out_dir = Path(scratch)
        for n in range(1 + args.runs):
            for mode in ("export", "baseline"):  # interleaved: load hits both alike
                figures = _spawn(mode, args.backend, client_id, out_dir)
                if n > 0:
                    results[mode].append(figures)

    export_med, export_p95 = _stats([r["seconds"] for r in results["export"]])
    base_med, base_p95 = _stats([r["seconds"] for r in results["baseline"]])
    peak = max(r["rss_mb"] for r in results["export"])
    at_start = max(r["rss_start_mb"] for r in results["export"])
    base_peak = max(r["rss_mb"] for r in results["baseline"])
    size_mb = results["export"][0]["size"] / 1e6
    verdict = "PASS" if export_p95 < BUDGET_S and peak < BUDGET_MB else "FAIL"
    print(f"\n{args.backend}: client with {args.emails:,} emails and {args.notes:,} notes")
    print(f"{common.load_note()}; {args.runs} runs, each in a fresh process")
    print(f"{'measured':<28} {'median s':>9} {'p95 s':>7} {'peak RSS MB':>12} {'zip MB':>7}")
    print(
        f"{'export (run_export)':<28} {export_med:>9.2f} {export_p95:>7.2f} {peak:>12.1f}"
        f" {size_mb:>7.1f}"
    )
    print(
        f"{'baseline (bare SQL + zip)':<28} {base_med:>9.2f} {base_p95:>7.2f} {base_peak:>12.1f}"
        f" {results['baseline'][0]['size'] / 1e6:>7.1f}"
    )
    print(f"RSS of the export process before exporting (app loaded): {at_start:.1f} MB")
    print(f"budget: p95 < {BUDGET_S:g} s and peak RSS < {BUDGET_MB:g} MB: {verdict}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "backend": args.backend,
                    "emails": args.emails,
                    "notes": args.notes,
                    "load": common.load_note(),
                    "export": results["export"],
                    "baseline": results["baseline"],
                    "verdict": verdict,
                },
                indent=2,
            )
        )
    if args.drop:
        common.drop_database(url)
        id_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
