"""The slot engine on plain schedules (no database): hours, exceptions, blocks,
buffers, capacity, booking window and the daylight-saving days in Europe/Warsaw."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from crm.appointments.slots import Busy, Schedule, ServiceRule, free_slots, to_instant

WARSAW = ZoneInfo("Europe/Warsaw")
MONDAY = date(2026, 6, 1)  # a summer Monday (CEST, UTC+2)
SPRING = date(2026, 3, 29)  # last Sunday of March: 02:00-03:00 does not exist
AUTUMN = date(2026, 10, 25)  # last Sunday of October: 02:00-03:00 happens twice
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)  # "now" for tests that are not about it


def rule(minutes=60, before=0, after=0, capacity=1, notice=0, ahead=3650, service_id=1):  # type: ignore[no-untyped-def]
    return ServiceRule(
        id=service_id,
        duration=timedelta(minutes=minutes),
        before=timedelta(minutes=before),
        after=timedelta(minutes=after),
        capacity=capacity,
        min_notice=timedelta(hours=notice),
        max_ahead=timedelta(days=ahead),
    )


def schedule(day: date, *intervals: tuple[time, time], staff_id: int = 1) -> Schedule:
    s = Schedule(staff_id=staff_id)
    s.weekly[day.weekday()] = list(intervals)
    return s


def at(day: date, hour: int, minute: int = 0, fold: int = 0) -> datetime:
    return datetime(
        day.year, day.month, day.day, hour, minute, fold=fold, tzinfo=WARSAW
    ).astimezone(UTC)


def local(slots) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.starts_at.astimezone(WARSAW).strftime("%H:%M%z") for s in slots]


def slots(service, schedules, day, now=LONG_AGO, **kw):  # type: ignore[no-untyped-def]
    return free_slots(service, schedules, day, day, WARSAW, now, **kw)


def test_a_working_day_on_a_quarter_hour_grid():
    found = slots(rule(60), [schedule(MONDAY, (time(9), time(12)))], MONDAY)
    assert local(found)[0] == "09:00+0200"
    assert local(found)[-1] == "11:00+0200"
    assert len(found) == 9  # 9:00 .. 11:00 every 15 minutes
    assert all(s.ends_at - s.starts_at == timedelta(hours=1) for s in found)


def test_several_intervals_and_days_without_hours():
    sched = schedule(MONDAY, (time(9), time(10)), (time(13), time(14)))
    assert local(slots(rule(60), [sched], MONDAY)) == ["09:00+0200", "13:00+0200"]
    assert slots(rule(60), [sched], MONDAY + timedelta(days=1)) == []


def test_exceptions_replace_or_remove_the_weekly_hours():
    sched = schedule(MONDAY, (time(9), time(17)))
    sched.exceptions.append(("hours", MONDAY, MONDAY, time(10), time(11)))
    assert local(slots(rule(60), [sched], MONDAY)) == ["10:00+0200"]
    sched.exceptions.append(
        ("off", MONDAY - timedelta(days=3), MONDAY + timedelta(days=3), None, None)
    )
    assert slots(rule(60), [sched], MONDAY) == []


def test_existing_appointments_and_blocks_take_their_time():
    sched = schedule(MONDAY, (time(9), time(13)))
    sched.appointments.append(
        Busy(7, 2, at(MONDAY, 10), at(MONDAY, 11), timedelta(0), timedelta(0))
    )
    sched.weekly_blocks.append((MONDAY.weekday(), time(12), time(12, 30)))
    assert local(slots(rule(60), [sched], MONDAY)) == ["09:00+0200", "11:00+0200"]
    # A one-off block.
    sched.once_blocks.append((at(MONDAY, 9), at(MONDAY, 9, 15)))
    assert local(slots(rule(60), [sched], MONDAY)) == ["11:00+0200"]


def test_buffers_of_both_sides_keep_time_free():
    sched = schedule(MONDAY, (time(9), time(13)))
    # Existing 10:00-11:00 with 15 minutes after it.
    sched.appointments.append(
        Busy(7, 2, at(MONDAY, 10), at(MONDAY, 11), timedelta(0), timedelta(minutes=15))
    )
    # Our service: 60 minutes with 30 before: may start once 11:15 + 30 min has passed.
    found = local(slots(rule(60, before=30), [sched], MONDAY))
    assert found == ["09:00+0200", "11:45+0200", "12:00+0200"]
    # 30 minutes after: 9:00 would run into 10:00 (9:00-10:00 + 30), so nothing before.
    found = local(slots(rule(60, after=30), [sched], MONDAY))
    assert found[0] == "11:15+0200"


def test_excluding_the_appointment_being_moved():
    sched = schedule(MONDAY, (time(9), time(10)))
    sched.appointments.append(Busy(7, 1, at(MONDAY, 9), at(MONDAY, 10), timedelta(0), timedelta(0)))
    assert slots(rule(60), [sched], MONDAY) == []
    assert local(slots(rule(60), [sched], MONDAY, exclude_appointment=7)) == ["09:00+0200"]


def test_capacity_offers_an_open_session_until_full():
    sched = schedule(MONDAY, (time(9), time(12)))
    workshop = rule(120, capacity=3)
    for n in range(2):
        sched.appointments.append(
            Busy(n, workshop.id, at(MONDAY, 9), at(MONDAY, 11), timedelta(0), timedelta(0))
        )
    found = slots(workshop, [sched], MONDAY)
    assert [(local([s])[0], s.seats_left) for s in found] == [("09:00+0200", 1)]
    sched.appointments.append(
        Busy(9, workshop.id, at(MONDAY, 9), at(MONDAY, 11), timedelta(0), timedelta(0))
    )
    assert slots(workshop, [sched], MONDAY) == []
    # A visit of another service never joins the session: only the hour after it.
    assert local(slots(rule(60, service_id=2), [sched], MONDAY)) == ["11:00+0200"]


def test_a_new_session_has_every_seat():
    found = slots(rule(120, capacity=12), [schedule(MONDAY, (time(9), time(11)))], MONDAY)
    assert [(local([s])[0], s.seats_left) for s in found] == [("09:00+0200", 12)]


def test_minimum_notice_and_maximum_days_ahead():
    sched = schedule(MONDAY, (time(9), time(17)))
    now = at(MONDAY, 8, 50)
    found = slots(rule(60, notice=2), [sched], MONDAY, now=now)
    assert local(found)[0] == "11:00+0200"  # 10:50 rounded up to the grid
    # Only up to one day ahead: a slot next Monday is too far.
    weekly = schedule(MONDAY, (time(9), time(17)))
    later = MONDAY + timedelta(days=7)
    assert slots(rule(60, ahead=1), [weekly], later, now=now) == []
    assert slots(rule(60, ahead=8), [weekly], later, now=now)
    # Staff booking skips the window but never offers the past.
    found = slots(rule(60, notice=2), [sched], MONDAY, now=now, honour_window=False)
    assert local(found)[0] == "09:00+0200"


def test_anyone_lists_every_staff_member_in_time_order():
    a = schedule(MONDAY, (time(9), time(10)), staff_id=1)
    b = schedule(MONDAY, (time(9, 30), time(10, 30)), staff_id=2)
    found = slots(rule(60), [b, a], MONDAY)
    assert [(local([s])[0], s.staff_id) for s in found] == [("09:00+0200", 1), ("09:30+0200", 2)]


# --- daylight saving (Europe/Warsaw) -------------------------------------------------------


def test_spring_forward_day():
    # 9:00-17:00 is eight hours as on any day (all of it in CEST).
    day = slots(rule(60), [schedule(SPRING, (time(9), time(17)))], SPRING)
    assert len(day) == 29 and local(day)[0] == "09:00+0200" and local(day)[-1] == "16:00+0200"
    # 01:00-04:00: 02:00-03:00 does not exist, so the shift lasts two real hours.
    shift = slots(rule(60), [schedule(SPRING, (time(1), time(4)))], SPRING)
    assert local(shift) == [
        "01:00+0100",
        "01:15+0100",
        "01:30+0100",
        "01:45+0100",
        "03:00+0200",
    ]
    assert all(s.ends_at - s.starts_at == timedelta(hours=1) for s in shift)


def test_a_time_in_the_spring_gap_means_the_end_of_the_gap():
    assert to_instant(SPRING, time(2, 30), WARSAW) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    shift = slots(rule(30), [schedule(SPRING, (time(2, 30), time(4)))], SPRING)
    assert local(shift)[0] == "03:00+0200"


def test_fall_back_day():
    day = slots(rule(60), [schedule(AUTUMN, (time(9), time(17)))], AUTUMN)
    assert len(day) == 29 and local(day)[0] == "09:00+0100"
    # 01:00-04:00 lasts four real hours: the grid walks the repeated hour twice.
    shift = slots(rule(60), [schedule(AUTUMN, (time(1), time(4)))], AUTUMN)
    labels = local(shift)
    assert len(shift) == 13  # 4 h of quarter hours, minus the last hour
    assert labels[:6] == [
        "01:00+0200",
        "01:15+0200",
        "01:30+0200",
        "01:45+0200",
        "02:00+0200",
        "02:15+0200",
    ]
    assert "02:00+0100" in labels and labels[-1] == "03:00+0100"
    # A repeated wall time means its first occurrence.
    assert to_instant(AUTUMN, time(2, 30), WARSAW) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_weekly_hours_keep_their_wall_clock_time_across_the_change():
    sched = Schedule(staff_id=1)
    sched.weekly[0] = [(time(9), time(10))]
    before, after = date(2026, 3, 23), date(2026, 3, 30)  # Mondays around the change
    found = free_slots(rule(60), [sched], before, after, WARSAW, LONG_AGO)
    assert local(found) == ["09:00+0100", "09:00+0200"]
    assert found[1].starts_at - found[0].starts_at == timedelta(days=7, hours=-1)
