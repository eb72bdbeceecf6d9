"""The run window with injected clocks: plain days, across midnight, always, and DST nights."""
from __future__ import annotations

from datetime import datetime, time

import pytest

from pipeline.schedule import Window

NIGHT = Window.parse({"start": "22:00", "end": "07:00"})
DAYTIME = Window.parse({"start": "09:30", "end": "17:00"})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_parse():
    assert NIGHT == Window(time(22, 0), time(7, 0))
    assert Window.parse({"start": "7:05", "end": " 23:59 "}) == Window(time(7, 5), time(23, 59))
    assert Window.parse(None).is_always and Window.always().is_always
    assert str(NIGHT) == "22:00-07:00" and str(Window.always()) == "always"


@pytest.mark.parametrize("spec, message", [
    ({"start": "24:00", "end": "07:00"}, "schedule.start: '24:00' is not a time of day"),
    ({"start": "22:00", "end": "7:60"}, "schedule.end: '7:60'"),
    ({"start": "10pm", "end": "07:00"}, "HH:MM"),
    ({"start": 1320, "end": "07:00"}, "quote the time"),  # what YAML makes of an unquoted 22:00
    ({"start": "22:00"}, "missing ['end']"),
    ("22:00-07:00", "expected a mapping"),
    ({"start": "22:00", "end": "07:00", "ends": "08:00"}, "unknown ['ends']"),
])
def test_parse_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Window.parse(spec)


@pytest.mark.parametrize("now, open_", [
    ("2026-11-27 21:59:59", False), ("2026-11-27 22:00", True), ("2026-11-27 23:59", True),
    ("2026-11-28 00:00", True), ("2026-11-28 06:59:59", True), ("2026-11-28 07:00", False),
    ("2026-11-28 12:00", False),
])
def test_is_open_across_midnight(now, open_):
    assert NIGHT.is_open(at(now)) is open_


def test_is_open_same_day():
    assert not DAYTIME.is_open(at("2026-11-27 09:29"))
    assert DAYTIME.is_open(at("2026-11-27 09:30")) and DAYTIME.is_open(at("2026-11-27 16:59"))
    assert not DAYTIME.is_open(at("2026-11-27 17:00"))


def test_always():
    w = Window.parse({"start": "03:00", "end": "03:00"})
    assert w.is_always and w.is_open(at("2026-11-27 12:00")) and w.closes_at(at("2026-11-27 12:00")) is None
    assert w.next_open(at("2026-11-27 12:00")) == at("2026-11-27 12:00")


def test_next_open():
    assert NIGHT.next_open(at("2026-11-27 12:00")) == at("2026-11-27 22:00")
    assert NIGHT.next_open(at("2026-11-28 07:00")) == at("2026-11-28 22:00")
    assert NIGHT.next_open(at("2026-11-27 23:00")) == at("2026-11-27 23:00")  # already open
    assert DAYTIME.next_open(at("2026-11-27 18:00")) == at("2026-11-28 09:30")
    assert DAYTIME.next_open(at("2026-12-31 17:00")) == at("2027-01-01 09:30")  # year end


def test_closes_at():
    assert NIGHT.closes_at(at("2026-11-27 23:00")) == at("2026-11-28 07:00")
    assert NIGHT.closes_at(at("2026-11-28 03:00")) == at("2026-11-28 07:00")
    assert NIGHT.closes_at(at("2026-11-28 12:00")) == at("2026-11-29 07:00")  # of the next opening
    assert DAYTIME.closes_at(at("2026-11-27 10:00")) == at("2026-11-27 17:00")
    assert DAYTIME.closes_at(at("2026-11-27 20:00")) == at("2026-11-28 17:00")


def test_dst_nights_use_the_wall_clock():
    """Naive local times across the spring-forward and fall-back nights (Europe: last Sunday of Mar/Oct)."""
    assert NIGHT.closes_at(at("2026-03-28 22:30")) == at("2026-03-29 07:00")
    assert NIGHT.is_open(at("2026-03-29 01:30"))  # a time that did not exist there: still inside
    assert NIGHT.next_open(at("2026-10-25 07:00")) == at("2026-10-25 22:00")
    assert NIGHT.is_open(at("2026-10-25 01:30").replace(fold=1))  # the repeated hour, second time round


def test_aware_datetimes_keep_their_zone():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        london = zoneinfo.ZoneInfo("Europe/London")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database on this machine")
    opens = NIGHT.next_open(datetime(2026, 3, 28, 12, 0, tzinfo=london))
    closes = NIGHT.closes_at(opens)
    assert (opens.hour, closes.hour, closes.day) == (22, 7, 29) and closes.tzinfo is london
    assert (closes - opens).total_seconds() == 9 * 3600  # wall-clock difference within one zone
    assert closes.utcoffset() != opens.utcoffset()  # BST began in between
