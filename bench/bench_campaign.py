"""Campaign sending benchmark: a campaign to --recipients (default 100,000) confirmed
subscribers, sent by real `dramatiq crm.queue` worker processes (Redis broker) into
Postfix's `smtp-sink`, against a bare smtplib loop sending the same messages to the same
server in the same run.

Figures, for 1 and 2 worker processes (--processes):

* the app: messages per second from the commit that started sending (audience already
  resolved into delivery rows; its time is printed apart) until the campaign is done;
  every delivery claimed, re-checked (subscription, suppression, consent), rendered,
  sent, recorded with its SMTP answer and its stored message;
* the bare loop: one smtplib connection per process, `sendmail` of the app's own
  message bytes to each recipient, nothing else;
* the ratio (budget: at least 80% of the bare loop) and the worker processes' peak
  resident memory (VmHWM; budget: under 150 MB).

smtp-sink is started by the script on a free port and stopped at the end (install it
with `apt-get install postfix`; the postfix service itself is not needed).

    .venv/bin/python -m bench.bench_campaign --backend sqlite
    .venv/bin/python -m bench.bench_campaign --backend postgresql
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask_migrate import upgrade

from bench import common
from crm.campaigns import services
from crm.campaigns.models import Campaign, Delivery, SentMessage
from crm.clients.models import Client
from crm.consents.models import ConsentState
from crm.demo import ensure_demo_fields, generate_clients, insert_clients
from crm.extensions import db
from crm.mailing.models import Subscription

RATIO_BUDGET = 0.80
RSS_BUDGET_MB = 150.0
ROOT = Path(__file__).resolve().parent.parent
SENDER = "news@example.com"
SUBJECT = "Nowości dla {{ first_name }}"
BODY = (
    "# Dzień dobry {{ first_name }} {{ last_name }}!\n\n"
    "Zapraszamy na **wiosenne** nowości. Grüße aus Łódź, pozdrawia zespół.\n\n"
    "* strzyżenie\n* koloryzacja\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink).exists():
        sys.exit("smtp-sink not found: apt-get install -y postfix (the service is not needed)")
    port = free_port()
    # smtp-sink refuses to run as root without a user to switch to.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(  # noqa: S603
        [sink, *as_user, "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _i in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("smtp-sink did not start")


# --- data ------------------------------------------------------------------------------------


def load(recipients: int, seed: int) -> int:
    """Clients with a confirmed subscription and a valid consent; returns the list id."""
    from crm.consents.services import PurposeSpec, create_purpose
    from crm.mailing.services import ListSpec, create_list

    upgrade()
    admin_id = common.create_admin()
    fields = ensure_demo_fields()
    db.session.commit()
    keys = {label: f.key for label, f in fields.items()}
    rng = random.Random(seed)
    common.loading_pragmas(db.session.connection())
    rows = generate_clients(recipients, rng, keys, [admin_id])

    def unique_addresses() -> Any:
        for n, row in enumerate(rows):
            row["email"] = f"r{n}@example.com"
            yield row

    insert_clients(unique_addresses())
    purpose = create_purpose(
        PurposeSpec(
            name="Newsletter",
            legal_basis="a",
            retention_months=24,
            channels=["email"],
            data_categories="name, email address",
        ),
        {"en": "Our monthly newsletter."},
        None,
    )
    mlist = create_list(ListSpec(name="Newsletter", purpose_id=purpose.id), None)
    db.session.flush()
    now = datetime.now(UTC)
    client_ids = db.session.scalars(sa.select(Client.id).order_by(Client.id)).all()
    for start in range(0, len(client_ids), 20_000):
        chunk = client_ids[start : start + 20_000]
        db.session.execute(
            sa.insert(Subscription),
            [
                {
                    "client_id": cid,
                    "list_id": mlist.id,
                    "status": "confirmed",
                    "confirm_nonce": "",
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in chunk
            ],
        )
        db.session.execute(
            sa.insert(ConsentState),
            [
                {
                    "client_id": cid,
                    "purpose_id": purpose.id,
                    "status": "given",
                    "since": now,
                    "expires_at": now + timedelta(days=700),
                    "updated_at": now,
                }
                for cid in chunk
            ],
        )
    db.session.commit()
    common.analyze(db.engine)
    return mlist.id


# --- the bare loop ------------------------------------------------------------------------


def _bare_worker(port: int, data: bytes, recipients: list[str]) -> None:
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="localhost")
    for rcpt in recipients:
        smtp.sendmail(SENDER, [rcpt], data)
    smtp.quit()


def bare_loop(port: int, data: bytes, recipients: list[str], processes: int) -> float:
    """Messages per second of plain smtplib, `processes` processes side by side."""
    parts = [recipients[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_bare_worker, args=(port, data, p)) for p in parts]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(recipients) / (time.perf_counter() - started)


# --- the app ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_workers(env: dict[str, str], processes: int, threads: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "crm.queue",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    log = (common.DATA_DIR / "campaign-workers.log").open("ab")
    return subprocess.Popen(  # noqa: S603
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_for_boot(parent: subprocess.Popen[bytes], processes: int) -> None:
    """The worker processes build the app at boot; wait until each has (its memory
    stops growing), so that start-up is not counted as sending time."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = _children(parent.pid)
        if len(children) >= processes:
            sizes = [_peak_rss_mb(c) for c in children]
            time.sleep(1.0)
            if sizes == [_peak_rss_mb(c) for c in children] and min(sizes) > 40:
                return
        time.sleep(0.2)


def app_run(
    app: Any,
    list_id: int,
    env: dict[str, str],
    processes: int,
    threads: int,
    before: Any = None,
) -> dict:
    """One campaign through the workers; `before()` runs once they have booted, just
    before sending starts (the bare loop's first measurement)."""
    parent = start_workers(env, processes, threads)
    try:
        wait_for_boot(parent, processes)
        before_result = before() if before is not None else None
        with app.app_context():
            from crm.auth.models import User

            user = db.session.scalar(sa.select(User).limit(1))
            campaign = services.create_campaign(
                services.CampaignSpec(
                    subject=SUBJECT,
                    sender_email=SENDER,
                    sender_name="Salon Łódź",
                    body=BODY,
                    list_ids=[list_id],
                ),
                user,
            )
            db.session.commit()
            resolve_started = time.perf_counter()
            app.config["CRM_CAMPAIGN_PARALLEL"] = processes * threads
            count = services.start_sending(campaign, user)
            db.session.commit()  # the actor messages go to Redis now
            started = time.perf_counter()
            resolve_s = started - resolve_started
            campaign_id = campaign.id
        peak = 0.0
        while True:
            time.sleep(0.25)
            for child in _children(parent.pid):
                peak = max(peak, _peak_rss_mb(child))
            with app.app_context():
                status = db.session.scalar(
                    sa.select(Campaign.status).where(Campaign.id == campaign_id)
                )
                db.session.commit()
            if status == "done":
                break
            if parent.poll() is not None:
                sys.exit("the workers stopped; see bench/.data/campaign-workers.log")
        elapsed = time.perf_counter() - started
        for child in _children(parent.pid):
            peak = max(peak, _peak_rss_mb(child))
        with app.app_context():
            stats = services.campaign_stats(campaign_id)
            sample = db.session.scalar(
                sa.select(SentMessage).where(SentMessage.campaign_id == campaign_id).limit(1)
            )
            data = sample.eml()
            recipients = list(
                db.session.scalars(
                    sa.select(Delivery.email)
                    .where(Delivery.campaign_id == campaign_id)
                    .order_by(Delivery.id)
                )
            )
        return {
            "recipients": count,
            "sent": stats.sent,
            "failed": stats.failed,
            "skipped": stats.skipped,
            "resolve_s": resolve_s,
            "seconds": elapsed,
            "rate": stats.sent / elapsed,
            "peak_rss_mb": peak,
            "data": data,
            "emails": recipients,
            "before": before_result,
        }
    finally:
        try:
            os.killpg(parent.pid, signal.SIGTERM)
            parent.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(parent.pid, signal.SIGKILL)


def sample_messages(app: Any, list_id: int) -> tuple[bytes, list[str]]:
    """The message the app would send to the first subscriber, and every address."""
    with app.app_context():
        first = db.session.execute(
            sa.select(Client.first_name, Client.last_name, Client.email)
            .order_by(Client.id)
            .limit(1)
        ).one()
        probe = Campaign(
            subject=SUBJECT,
            sender_email=SENDER,
            sender_name="Salon Łódź",
            body=BODY,
            body_format="markdown",
        )
        data, _rendered, _mid = services.prepare(probe).message(
            to_email=first.email,
            to_name=f"{first.first_name} {first.last_name}",
            variables=services.variables_for(
                first.first_name, first.last_name, first.email, "https://crm.example.com/u/x"
            ),
        )
        emails = list(db.session.scalars(sa.select(Client.email).order_by(Client.id)))
        db.session.rollback()
    return data, emails


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--processes", default="1,2", help="worker process counts to run")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process")
    parser.add_argument("--batch-size", type=int, default=500, help="CRM_CAMPAIGN_BATCH_SIZE")
    parser.add_argument(
        "--redis", default=os.environ.get("CRM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    url = common.database_url(args.backend, f"campaign_{args.recipients}")
    common.create_database(url)
    app = common.make_app(url)
    started = time.perf_counter()
    with app.app_context():
        list_id = load(args.recipients, args.seed)
    print(
        f"{args.backend}: {args.recipients:,} subscribers loaded in "
        f"{time.perf_counter() - started:.1f} s"
    )
    sink, port = start_sink()
    env = {
        **os.environ,
        "CRM_DATABASE_URL": url,
        "CRM_BROKER_URL": args.redis,
        "CRM_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "CRM_SECRET_KEY": "bench-secret",
        "CRM_BASE_URL": "https://crm.example.com",
        "CRM_INSTANCE_PATH": str(common.DATA_DIR / "instance"),
        "CRM_EMBEDDED_WORKERS": "0",
        "CRM_CAMPAIGN_BATCH_SIZE": str(args.batch_size),
        "CRM_MAIL_RATE": "0",
        # Each worker process takes as many messages as it has threads: by default a
        # dramatiq process prefetches twice that, so the first process to poll took
        # every message of the campaign and the second process sent nothing.
        "dramatiq_queue_prefetch": str(args.threads),
    }
    # The bench process enqueues to the same Redis as the workers.
    import crm.queue
    from crm.campaigns.tasks import send_campaign

    redis_broker = crm.queue.make_broker(args.redis)
    crm.queue.broker = redis_broker
    send_campaign.broker = redis_broker
    redis_broker.declare_actor(send_campaign)
    redis_broker.flush_all()
    results = []
    try:
        for processes in [int(p) for p in args.processes.split(",")]:
            before = functools.partial(bare_loop, port, *sample_messages(app, list_id), processes)
            run = app_run(app, list_id, env, processes, args.threads, before=before)
            # The machine is shared: the baseline is measured right before and right
            # after the app's run, with the app's own message bytes, and averaged.
            bare_after = bare_loop(port, run["data"], run["emails"], processes)
            bare = (run["before"] + bare_after) / 2
            ratio = run["rate"] / bare
            results.append(
                {
                    "backend": args.backend,
                    "processes": processes,
                    "threads": args.threads,
                    "recipients": run["recipients"],
                    "sent": run["sent"],
                    "resolve_s": round(run["resolve_s"], 2),
                    "app_seconds": round(run["seconds"], 1),
                    "app_rate": round(run["rate"]),
                    "bare_rate": round(bare),
                    "bare_before": round(run["before"]),
                    "bare_after": round(bare_after),
                    "ratio": round(ratio, 3),
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "message_bytes": len(run["data"]),
                }
            )
            r = results[-1]
            verdict = "PASS" if ratio >= RATIO_BUDGET else "FAIL"
            memory = "PASS" if r["peak_rss_mb"] < RSS_BUDGET_MB else "FAIL"
            print(
                f"{args.backend} {processes} process(es) x {args.threads} threads: "
                f"app {r['app_rate']:,}/s ({r['sent']:,} sent in {r['app_seconds']} s; "
                f"audience resolved in {r['resolve_s']} s), bare smtplib {r['bare_rate']:,}/s "
                f"(before {r['bare_before']:,}, after {r['bare_after']:,}), "
                f"ratio {ratio:.0%} [{verdict} >= 80%], worker peak RSS "
                f"{r['peak_rss_mb']} MB [{memory} < 150 MB]"
            )
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        redis_broker.flush_all()
        redis_broker.close()
        with app.app_context():
            db.engine.dispose()
        if args.drop:
            common.drop_database(url)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
