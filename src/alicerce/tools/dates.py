"""The dates tool: calendar and business-day arithmetic, which small models get wrong.

Business days skip weekends and the national holidays of `country` (and `subdivision`'s)
from the `holidays` package, whose data ships inside it (no download). Dates are ISO
(YYYY-MM-DD): the model converts "3 de março de 2026" itself, and a date it gets wrong is
an error naming the format, not a guess.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import holidays
from pydantic import BaseModel, Field

from alicerce.errors import InputError
from alicerce.tools.base import Tool, ToolFailed, strict

MAX_DAYS = 36_600  # a century either way
_WEEKDAYS = {"pt": ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira",
                    "sexta-feira", "sábado", "domingo"),
             "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                    "Sunday")}
Operation = Literal["add_days", "add_business_days", "days_between",
                    "business_days_between", "weekday", "today"]


class DatesOptions(BaseModel):
    country: str = "BR"
    subdivision: str | None = None
    language: Literal["pt", "en"] = "pt"


class _Calendar:
    def __init__(self, opts: DatesOptions) -> None:
        try:
            self.holidays = holidays.country_holidays(opts.country, subdiv=opts.subdivision)
        except NotImplementedError as exc:
            raise InputError(f"dates: no holiday calendar for {opts.country!r} "
                             f"{opts.subdivision or ''}: {exc}",
                             hint="an ISO country code such as BR, PT, US; subdivision "
                                  "e.g. SP") from None
        self.names = _WEEKDAYS[opts.language]

    def shown(self, d: dt.date) -> str:
        holiday = self.holidays.get(d)
        return f"{d.isoformat()} ({self.names[d.weekday()]}{', ' + holiday if holiday else ''})"

    def business(self, d: dt.date) -> bool:
        return d.weekday() < 5 and d not in self.holidays

    def add_business(self, start: dt.date, days: int) -> dt.date:
        cur, left, step = start, abs(days), 1 if days >= 0 else -1
        while left:
            cur += dt.timedelta(days=step)
            left -= self.business(cur)
        return cur

    def business_between(self, start: dt.date, stop: dt.date) -> int:
        lo, hi = sorted((start, stop))
        count = sum(self.business(lo + dt.timedelta(days=i))
                    for i in range(1, (hi - lo).days + 1))
        return count if stop >= start else -count

    def run(self, operation: Operation, date: str | None = None, days: int | None = None,
            end: str | None = None) -> str:
        if operation == "today":
            return self.shown(dt.date.today())
        start = _day(date, "date")
        if operation == "weekday":
            return self.shown(start)
        if operation in ("add_days", "add_business_days"):
            if days is None:
                raise ToolFailed(f"{operation} needs days (negative to go back)")
            return self.shown(start + dt.timedelta(days=days) if operation == "add_days"
                              else self.add_business(start, days))
        stop = _day(end, "end")
        if operation == "days_between":
            return str((stop - start).days)
        return str(self.business_between(start, stop))


def _day(iso: str | None, what: str) -> dt.date:
    if not iso:
        raise ToolFailed(f"{what} is needed (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(iso.strip())
    except ValueError:
        raise ToolFailed(f"{what} {iso!r} is not a date as YYYY-MM-DD (e.g. 2026-03-03)"
                         ) from None


def dates(options: dict[str, Any]) -> Tool:
    opts = DatesOptions.model_validate(options)
    calendar = _Calendar(opts)
    args = strict(
        operation=(Operation, Field(description="add_days / add_business_days: date + days; "
                                    "days_between / business_days_between: from date to "
                                    "end; weekday: the day of the week of date; today")),
        date=(str | None, Field(None, description="YYYY-MM-DD")),
        days=(int | None, Field(None, ge=-MAX_DAYS, le=MAX_DAYS,
                                description="days to add (negative: before)")),
        end=(str | None, Field(None, description="YYYY-MM-DD, for the *_between operations")))
    return Tool("dates", "Date arithmetic: adds calendar or business days to a date (use "
                "negative days to count back), counts the days or business days between two "
                "dates, gives a date's weekday or today's date. Business days skip weekends "
                f"and {opts.country} holidays.", args, calendar.run,
                meta={"trusted": True})
