"""Scheduled runs: the cron expression, what a scheduled run promotes, and the schedule
operations behind ``tune2serve schedule``.

A schedule re-submits the same pipeline parameters every time it fires, so a scheduled
run cannot name *which* tuning output to promote. It names a prefix instead:
``source = "newest:gs://bucket/tuning-runs"`` (``--source-prefix``). The pipeline's
first step, ``discover``, resolves it to the newest *completed* tuning output under the
prefix, and the run ends at once, as a no-op that says why, when there is none or when
that output was already promoted. That logic lives with the step, in
``tune2serve.components.discover.discover`` (``resolve_source``).

The cron parser is ours (no croniter here): five unix-cron fields with an optional
``CRON_TZ=``/``TZ=`` prefix, the syntax Vertex AI schedules accept. It validates before
anything is sent, and the local Vertex server uses it to work out ``nextRunTime``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from tune2serve.components import ranges
from tune2serve.components.errors import UsageError

# ---------------------------------------------------------------------------- cron

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6))
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_WEEKDAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_TZ_PREFIX = re.compile(r"^(?:CRON_TZ|TZ)=(\S+)\s+(.*)$")
_CRON_HELP = "expected 5 fields 'MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 3 * * *' (03:00 daily), optionally prefixed 'CRON_TZ=Europe/Paris '"


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; ``next_after`` gives the next firing time (UTC)."""

    text: str
    timezone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow  # unix cron: either restriction suffices when both are given
        return dom and dow

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first firing strictly after ``after`` (aware), as an aware UTC datetime."""
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.timezone)
        local = after.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None) + dt.timedelta(minutes=1)
        for _ in range(200_000):  # bounded: ~5 years of skipped days at worst
            if local.month not in self.months:
                year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
                local = dt.datetime(year, month, 1)
            elif not self._day_matches(local.date()):
                local = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time())
            elif local.hour not in self.hours:
                local = local.replace(minute=0) + dt.timedelta(hours=1)
            elif local.minute not in self.minutes:
                local += dt.timedelta(minutes=1)
            else:
                return local.replace(tzinfo=zone).astimezone(dt.timezone.utc)
        raise UsageError(f"cron {self.text!r} never fires (check day-of-month against month)")


def _value(token: str, index: int, text: str) -> int:
    names = _MONTHS if index == 3 else _WEEKDAYS if index == 4 else {}
    name, low, high = _FIELDS[index]
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise UsageError(f"cron {text!r}: {name} value {token!r} is not a number; {_CRON_HELP}")
    number = int(token)
    if index == 4 and number == 7:
        return 0  # 7 is Sunday too
    if not low <= number <= high:
        raise UsageError(f"cron {text!r}: {name} value {number} is outside {low}-{high}; {_CRON_HELP}")
    return number


def _field(part: str, index: int, text: str) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for item in part.split(","):
        base, _, step_text = item.partition("/")
        if step_text and not (step_text.isdigit() and int(step_text) > 0):
            raise UsageError(f"cron {text!r}: {name} step {step_text!r} must be a positive number; {_CRON_HELP}")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, index, text), _value(b, index, text)
            if start > end:
                raise UsageError(f"cron {text!r}: {name} range {base!r} runs backwards; {_CRON_HELP}")
        elif base:
            start = _value(base, index, text)
            end = high if step_text else start
        else:
            raise UsageError(f"cron {text!r}: empty {name} item; {_CRON_HELP}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> Cron:
    """Parses a unix-cron expression, raising ``UsageError`` that says what is wrong."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    body, timezone = text.strip(), "UTC"
    if match := _TZ_PREFIX.match(body):
        timezone, body = match.group(1), match.group(2).strip()
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise UsageError(f"cron {text!r}: unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris'") from e
    parts = body.split()
    if len(parts) != 5:
        raise UsageError(f"cron {text!r} has {len(parts)} field(s); {_CRON_HELP}")
    fields = [_field(p, i, text) for i, p in enumerate(parts)]
    return Cron(text.strip(), timezone, *fields,
                days_restricted=not parts[2].startswith("*"), weekdays_restricted=not parts[4].startswith("*"))


# ------------------------------------------------------------------ schedule operations


def create_schedule(submission: Any, *, cron: str, display_name: str, max_concurrent_run_count: int = 1,
                    max_run_count: int | None = None, start_time: str | None = None,
                    end_time: str | None = None) -> dict[str, Any]:
    """Validates the cron and the submission (``pipelines.submit.Submission``), then creates
    the schedule. Nothing is created when anything is wrong."""
    from tune2serve.components.vertex import pipeline_jobs

    parse_cron(cron)
    ranges.MAX_CONCURRENT_RUNS.check(max_concurrent_run_count)
    if max_run_count is not None:
        ranges.MAX_RUNS.check(max_run_count)
    return pipeline_jobs.create_schedule(
        submission.vertex, submission.run_spec, cron=cron, display_name=display_name,
        max_concurrent_run_count=max_concurrent_run_count, max_run_count=max_run_count,
        start_time=start_time, end_time=end_time,
    )



__all__ = ["Cron", "create_schedule", "parse_cron"]
