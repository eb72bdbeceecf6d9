"""The run window: the hours of the night when the daemon may use the GPU.

Times are wall-clock times in whatever zone `now` carries (naive local time, normally). Arithmetic
is done on the wall clock on purpose: "22:00" means 22:00 on the clock on the wall, also on the
nights when DST shifts by an hour, so a window is one hour longer or shorter on those two nights.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Mapping

from .errors import UsageError

_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
DAY = timedelta(days=1)


def parse_hhmm(value: object, key: str) -> time:
    """'22:00' -> time(22, 0), or a UsageError that names the key and the bad value."""
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320; say so rather than guess.
        raise UsageError(f"schedule.{key}: got the number {value}; quote the time, e.g. {key}: \"22:00\"")
    match = _HHMM.fullmatch(str(value).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UsageError(f"schedule.{key}: {value!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return time(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class Window:
    """A daily window [start, end); end before start crosses midnight; start == end is always open."""

    start: time = time(0, 0)
    end: time = time(0, 0)

    @classmethod
    def always(cls) -> "Window":
        return cls()

    @classmethod
    def parse(cls, spec: Mapping[str, object] | None) -> "Window":
        """From the config's `schedule:` mapping ({"start": "22:00", "end": "07:00"}); None is always."""
        if spec is None:
            return cls.always()
        if not isinstance(spec, Mapping):
            raise UsageError(f"schedule: expected a mapping like {{start: \"22:00\", end: \"07:00\"}}, got {spec!r}")
        unknown = set(spec) - {"start", "end"}
        missing = {"start", "end"} - set(spec)
        if unknown or missing:
            raise UsageError(f"schedule: needs exactly the keys start and end (HH:MM); "
                             f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        return cls(parse_hhmm(spec["start"], "start"), parse_hhmm(spec["end"], "end"))

    @property
    def is_always(self) -> bool:
        return self.start == self.end

    def is_open(self, now: datetime) -> bool:
        t = now.time()
        if self.is_always:
            return True
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # crosses midnight

    def next_open(self, now: datetime) -> datetime:
        """`now` if open, else the next time the window opens."""
        if self.is_open(now):
            return now
        opens = _at(now, self.start)
        return opens if opens > now else opens + DAY

    def closes_at(self, now: datetime) -> datetime | None:
        """When the current (or, if closed, the next) opening ends; None for an always-open window."""
        if self.is_always:
            return None
        if not self.is_open(now):
            return self.closes_at(self.next_open(now))
        closes = _at(now, self.end)
        return closes if closes > now else closes + DAY

    def __str__(self) -> str:
        return "always" if self.is_always else f"{self.start:%H:%M}-{self.end:%H:%M}"


def _at(day: datetime, t: time) -> datetime:
    """The same calendar day (and tzinfo) as `day`, at wall-clock time `t`."""
    return day.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
