"""The slot engine: free start times for a service, a date range and some staff.

Pure and set-based. `load_schedules` reads everything for the range in one query per
table (all staff members at once); `free_slots` then works in Python with interval
arithmetic and never touches the database, so the booking transaction can run it again
for one staff member after taking that staff member's lock.

Rules (also in docs):

- Working hours, exceptions and weekly blocks are local wall-clock times in the
  organisation's zone, turned into UTC instants per date. A wall time that does not
  exist (the spring-forward gap, 02:00-03:00 in Europe/Warsaw on the last Sunday of
  March) means the first instant after the gap: a 01:00-04:00 shift lasts two hours
  that day, 9:00-17:00 is unaffected. A wall time that happens twice (02:00-03:00 on the
  last Sunday of October) means its first occurrence: a 01:00-04:00 shift lasts four
  hours, and the grid walks through the repeated hour twice.
- The grid: a slot may start every 15 minutes of real time from the start of each
  working interval (so 9:00, 9:15, ... when hours start on the hour, whatever the
  service's length). The appointment itself lies within working hours.
- Buffers keep time free around appointments: the candidate's buffer before and after
  may not overlap another appointment (with that appointment's own buffers) or a block;
  they may run outside working hours (preparing before opening is the staff member's
  choice).
- Booking window: a slot starts no earlier than `now + minimum notice` and no later than
  `now + maximum days ahead`; staff booking for a client skips both (only the past is
  closed to them).
- Capacity: a service with N seats runs sessions. An existing session with free seats is
  offered at its own start (seats_left = N - booked) even though it occupies the time;
  a new session starts wherever a visit could.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select

from crm.appointments.models import (
    HOLDING_STATUSES,
    Appointment,
    AvailabilityException,
    Block,
    BlockKind,
    ExceptionKind,
    WorkingHours,
)
from crm.extensions import db

STEP = timedelta(minutes=15)
_SLOT_ORDER = attrgetter("starts_at", "staff_id")
# Buffers are limited to this (forms.MAX_BUFFER_MINUTES), so loading appointments this
# far around the range finds every one whose buffers reach into it.
LOAD_MARGIN = timedelta(hours=12)

Interval = tuple[datetime, datetime]  # UTC, start < end


@dataclass(frozen=True, order=True)
class Slot:
    starts_at: datetime
    staff_id: int
    ends_at: datetime
    seats_left: int


class Busy(NamedTuple):
    """An appointment as the engine sees it (a tuple: thousands are made per call)."""

    id: int
    service_id: int
    starts_at: datetime
    ends_at: datetime
    before: timedelta
    after: timedelta

    @property
    def occupied(self) -> Interval:
        return (self.starts_at - self.before, self.ends_at + self.after)


@dataclass
class Schedule:
    """One staff member's availability rules and appointments around a range."""

    staff_id: int
    weekly: dict[int, list[tuple[time, time]]] = field(default_factory=lambda: defaultdict(list))
    # (kind, first date, last date, start, end)
    exceptions: list[tuple[str, date, date, time | None, time | None]] = field(default_factory=list)
    weekly_blocks: list[tuple[int, time, time]] = field(default_factory=list)
    once_blocks: list[Interval] = field(default_factory=list)
    appointments: list[Busy] = field(default_factory=list)
    # What each block is for, for the calendar: (weekday, start, end) or (starts, ends).
    block_notes: dict[tuple[Any, ...], str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceRule:
    """What the engine needs of a service (a plain copy, so it runs without a session)."""

    id: int
    duration: timedelta
    before: timedelta
    after: timedelta
    capacity: int
    min_notice: timedelta
    max_ahead: timedelta

    @classmethod
    def of(cls, service: Any) -> ServiceRule:
        return cls(
            id=service.id,
            duration=timedelta(minutes=service.duration_minutes),
            before=timedelta(minutes=service.buffer_before_minutes),
            after=timedelta(minutes=service.buffer_after_minutes),
            capacity=service.capacity,
            min_notice=timedelta(hours=service.min_notice_hours),
            max_ahead=timedelta(days=service.max_days_ahead),
        )


# --- wall-clock times to instants ----------------------------------------------------------


@lru_cache(maxsize=65536)
def to_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time on a date (see the module doc for the
    spring gap and the repeated autumn hour). Cached: staff members mostly share the
    same few hours, and the answer for a date, time and zone never changes (zoneinfo
    caches its zones, and a new tzdata release means a new process)."""
    local = datetime.combine(day, wall, tzinfo=zone)  # fold=0: the first occurrence
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In the gap: the first instant after it is the moment the offset changed, found by
    # bisection between the two readings of the wall time (at most a few hours apart).
    low = local.replace(fold=1).astimezone(UTC)
    high = instant
    offset_before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def _day_interval(day: date, start: time, end: time, zone: ZoneInfo) -> Interval | None:
    begin, finish = to_instant(day, start, zone), to_instant(day, end, zone)
    return (begin, finish) if begin < finish else None


def local_dates(start: date, end: date) -> list[date]:
    """Every date from start to end inclusive."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def working_intervals(schedule: Schedule, day: date, zone: ZoneInfo) -> list[Interval]:
    """The staff member's working time on one local date, as sorted UTC intervals.
    A day off wins over other hours; other hours replace the weekly ones."""
    other: list[tuple[time, time]] = []
    for kind, first, last, start, end in schedule.exceptions:
        if not first <= day <= last:
            continue
        if kind == ExceptionKind.OFF.value:
            return []
        if start is not None and end is not None:
            other.append((start, end))
    pairs = other if other else schedule.weekly.get(day.weekday(), [])
    intervals = [iv for s, e in pairs if (iv := _day_interval(day, s, e, zone))]
    return _merge(intervals)


def block_intervals(schedule: Schedule, days: Sequence[date], zone: ZoneInfo) -> list[Interval]:
    intervals = list(schedule.once_blocks)
    for day in days:
        for weekday, start, end in schedule.weekly_blocks:
            if weekday == day.weekday() and (iv := _day_interval(day, start, end, zone)):
                intervals.append(iv)
    return intervals


def labelled_blocks(
    schedule: Schedule, day: date, zone: ZoneInfo
) -> list[tuple[datetime, datetime, str]]:
    """The blocks touching one local date with what they are for (the calendar's view)."""
    begin, end = to_instant(day, time(0), zone), to_instant(day + timedelta(days=1), time(0), zone)
    found = [
        (s, e, schedule.block_notes.get((s, e), ""))
        for s, e in schedule.once_blocks
        if s < end and e > begin
    ]
    for weekday, start, finish in schedule.weekly_blocks:
        if weekday == day.weekday() and (iv := _day_interval(day, start, finish, zone)):
            found.append((*iv, schedule.block_notes.get((weekday, start, finish), "")))
    return sorted(found)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


# --- the engine ----------------------------------------------------------------------------


def free_slots(
    service: ServiceRule,
    schedules: Iterable[Schedule],
    start: date,
    end: date,
    zone: ZoneInfo,
    now: datetime,
    *,
    honour_window: bool = True,
    exclude_appointment: int | None = None,
) -> list[Slot]:
    """Free slots of `service` on the local dates start..end (inclusive), for each
    schedule (one per staff member offering the service), sorted by time then staff.

    `exclude_appointment` leaves one appointment out, so rescheduling it may move it into
    time it overlaps now. Without `honour_window` (staff booking) only the past is closed.
    """
    if honour_window:
        earliest, latest = now + service.min_notice, now + service.max_ahead
    else:
        earliest, latest = now, datetime.max.replace(tzinfo=UTC)
    days = local_dates(start, end)
    slots: list[Slot] = []
    for schedule in schedules:
        slots.extend(
            _staff_slots(service, schedule, days, zone, earliest, latest, exclude_appointment)
        )
    slots.sort(key=_SLOT_ORDER)
    return slots


def _staff_slots(
    service: ServiceRule,
    schedule: Schedule,
    days: list[date],
    zone: ZoneInfo,
    earliest: datetime,
    latest: datetime,
    exclude: int | None,
) -> list[Slot]:
    appointments = [a for a in schedule.appointments if a.id != exclude]
    blocks = block_intervals(schedule, days, zone)
    busy = _merge([a.occupied for a in appointments] + blocks)
    busy_starts = [b[0] for b in busy]
    duration, before, after = service.duration, service.before, service.after
    staff_id, capacity = schedule.staff_id, service.capacity
    result: list[Slot] = []
    windows: list[Interval] = []
    for day in days:
        for work_start, work_end in working_intervals(schedule, day, zone):
            windows.append((work_start, work_end))
            last_start = min(work_end - duration, latest)
            t = work_start
            if t < earliest:  # jump to the first grid point not before `earliest`
                t += STEP * -(-(earliest - t) // STEP)
            # Busy intervals are merged and sorted: one pointer walks them as t grows.
            i = max(0, bisect.bisect_right(busy_starts, t - before) - 1)
            while t <= last_start:
                occupied_from, occupied_to = t - before, t + duration + after
                while i < len(busy) and busy[i][1] <= occupied_from:
                    i += 1
                if i < len(busy) and busy[i][0] < occupied_to:
                    # Skip to the first grid point whose buffer clears this busy stretch.
                    clear = busy[i][1] + before
                    t += STEP * max(1, -(-(clear - t) // STEP))
                    continue
                result.append(Slot(t, staff_id, t + duration, capacity))
                t += STEP
    if capacity > 1:
        result.extend(
            _open_sessions(service, appointments, blocks, windows, earliest, latest, staff_id)
        )
    return result


def _open_sessions(
    service: ServiceRule,
    appointments: list[Busy],
    blocks: list[Interval],
    windows: list[Interval],
    earliest: datetime,
    latest: datetime,
    staff_id: int,
) -> list[Slot]:
    """Existing sessions of a seat-based service that still have seats."""
    sessions: dict[datetime, list[Busy]] = defaultdict(list)
    for appointment in appointments:
        if appointment.service_id == service.id:
            sessions[appointment.starts_at].append(appointment)
    found = []
    for starts_at, seats in sessions.items():
        if len(seats) >= service.capacity or not earliest <= starts_at <= latest:
            continue
        ends_at = starts_at + service.duration
        if not any(ws <= starts_at and ends_at <= we for ws, we in windows):
            continue
        occupied_from, occupied_to = starts_at - service.before, ends_at + service.after
        members = {a.id for a in seats}
        others = [a.occupied for a in appointments if a.id not in members] + blocks
        if any(s < occupied_to and occupied_from < e for s, e in others):
            continue
        found.append(Slot(starts_at, staff_id, ends_at, service.capacity - len(seats)))
    return found


# --- loading -------------------------------------------------------------------------------


def range_bounds(start: date, end: date, zone: ZoneInfo) -> Interval:
    """UTC instants from local midnight of `start` to local midnight after `end`."""
    return (
        to_instant(start, time(0), zone),
        to_instant(end + timedelta(days=1), time(0), zone),
    )


def load_schedules(
    staff_ids: Sequence[int], start: date, end: date, zone: ZoneInfo
) -> dict[int, Schedule]:
    """Every staff member's rules and holding appointments around the local dates
    start..end: one query per table, for all of them at once."""
    schedules = {sid: Schedule(staff_id=sid) for sid in staff_ids}
    if not schedules:
        return schedules
    ids = list(schedules)
    begin, finish = range_bounds(start, end, zone)
    # Core rows, not ORM results: thousands of appointments are read per call.
    connection = db.session.connection()
    for user_id, weekday, s, e in connection.execute(
        select(
            WorkingHours.user_id,
            WorkingHours.weekday,
            WorkingHours.start_time,
            WorkingHours.end_time,
        ).where(WorkingHours.user_id.in_(ids))
    ):
        schedules[user_id].weekly[weekday].append((s, e))
    for row in connection.execute(
        select(
            AvailabilityException.user_id,
            AvailabilityException.kind,
            AvailabilityException.start_date,
            AvailabilityException.end_date,
            AvailabilityException.start_time,
            AvailabilityException.end_time,
        ).where(
            AvailabilityException.user_id.in_(ids),
            AvailabilityException.end_date >= start,
            AvailabilityException.start_date <= end,
        )
    ):
        schedules[row[0]].exceptions.append(tuple(row[1:]))  # type: ignore[arg-type]
    for block in db.session.scalars(
        select(Block).where(
            or_(Block.user_id.in_(ids), Block.user_id.is_(None)),
            or_(
                Block.kind == BlockKind.WEEKLY.value,
                (Block.starts_at < finish) & (Block.ends_at > begin),
            ),
        )
    ):
        targets = [schedules[block.user_id]] if block.user_id is not None else schedules.values()
        for schedule in targets:
            if block.kind == BlockKind.WEEKLY.value:
                assert block.weekday is not None and block.start_time and block.end_time
                key: tuple[Any, ...] = (block.weekday, block.start_time, block.end_time)
                schedule.weekly_blocks.append((block.weekday, block.start_time, block.end_time))
            elif block.starts_at and block.ends_at:
                key = (block.starts_at, block.ends_at)
                schedule.once_blocks.append((block.starts_at, block.ends_at))
            else:
                continue
            if block.note:
                schedule.block_notes[key] = block.note
    for row in connection.execute(
        select(
            Appointment.id,
            Appointment.staff_id,
            Appointment.service_id,
            Appointment.starts_at,
            Appointment.ends_at,
            Appointment.buffer_before_minutes,
            Appointment.buffer_after_minutes,
        ).where(
            Appointment.staff_id.in_(ids),
            Appointment.status.in_(HOLDING_STATUSES),
            Appointment.starts_at < finish + LOAD_MARGIN,
            Appointment.ends_at > begin - LOAD_MARGIN,
        )
    ):
        appointment_id, staff_id, service_id, starts_at, ends_at, before, after = row
        schedules[staff_id].appointments.append(
            Busy(appointment_id, service_id, starts_at, ends_at, _minutes(before), _minutes(after))
        )
    return schedules


@lru_cache(maxsize=1024)
def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
