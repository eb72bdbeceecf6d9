"""The notices waiting for `notify:`'s one sender thread: bounded, in order, held back from a target that keeps failing.

Before (rev11a), a plain queue: a webhook that accepts and never answers cost the whole delivery deadline (20 s) a
notice, so a night of 1,000 failures took 5.6 h to drain, the morning's "queue is empty" summary waited behind all
of them, and a stop dropped the rest without a word. Now, as a reader of ntfy or Healthchecks on a phone expects:
- at most MAX_QUEUED notices wait one by one; past them the photos are counted into one "N more photos failed
  (see `style-pipeline report`)" notice, sent after them. A notice that could not be delivered is counted there
  too, so no photo goes untold while the daemon runs, and the backlog is a counter, not a list;
- the summary has its own slot (a second one while the first waits widens its window rather than queueing), and
  while the target is failing it goes first: it is the one notice that says how the night went;
- after BREAK_AFTER failed deliveries in a row the breaker opens: nothing is tried for COOL_OFF seconds (doubling
  after each failed try, up to COOL_OFF_MAX), then one notice; a success closes it;
- what a stop could not send is counted (Alerts.flush logs it).
The sender (alerts.Alerts) delivers and logs; this module only decides what goes next and when.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime

MAX_QUEUED = 10  # notices held one by one; past them, counted into one "N more" notice
BREAK_AFTER = 3  # failed deliveries in a row that open the breaker
COOL_OFF = 60.0  # seconds the breaker first holds notices back; doubles after each failed try
COOL_OFF_MAX = 900.0
MORE = {"failed": "failed", "unclaimable": "cannot be taken from the inbox", "paused": "cannot be written"}


@dataclass
class Notice:
    target: str
    event: str
    title: str
    message: str


@dataclass
class Summary:
    """The queue-empty notice while it waits: its window and, counted in memory (no folders), its counts."""
    target: str
    since: datetime
    until: datetime
    styled: int = 0
    failed: int = 0

    def widened(self, later: Summary) -> Summary:
        return replace(later, since=min(self.since, later.since), until=max(self.until, later.until),
                       styled=self.styled + later.styled, failed=self.failed + later.failed)


@dataclass
class More:
    """The photos told only as a count: by event, to the last target given, in order from `seq`."""
    target: str = ""
    seq: int = 0
    counts: Counter = field(default_factory=Counter)

    def title(self) -> str:
        """"12 more photos failed, 1 more photo cannot be taken from the inbox"."""
        return ", ".join(f"{n} more {'folder' if kind == 'paused' else 'photo'}{'' if n == 1 else 's'} "
                         f"{MORE.get(kind, kind)}" for kind, n in self.counts.items())


@dataclass
class Item:
    """One thing the sender delivers: a Notice, the Summary or the More count, and where it stood in line."""
    seq: int
    what: Notice | Summary | More
    dropped: bool = False  # by a stop while in flight: not put back if it fails


class Breaker:
    """Failed deliveries in a row to one target (a new target starts afresh); open from BREAK_AFTER of them."""

    def __init__(self) -> None:
        self.target, self.failures, self.cool_off, self.retry_at = "", 0, 0.0, 0.0

    def is_open(self) -> bool:
        return self.failures >= BREAK_AFTER

    def wait(self, target: str, now: float) -> float:
        """Seconds before `target` may be tried: 0 unless the breaker is open for it."""
        return max(0.0, self.retry_at - now) if target == self.target and self.is_open() else 0.0

    def record(self, target: str, ok: bool) -> str | None:
        """Counts one delivery; "opened" or "closed" when that changed (each logged once by the sender)."""
        if target != self.target:
            self.target, self.failures, self.cool_off = target, 0, 0.0
        was_open = self.is_open()
        if ok:
            self.failures, self.cool_off = 0, 0.0
            return "closed" if was_open else None
        self.failures += 1
        if self.is_open():
            self.cool_off = min(COOL_OFF_MAX, self.cool_off * 2 or COOL_OFF)
            self.retry_at = time.monotonic() + self.cool_off
        return "opened" if self.is_open() and not was_open else None


class Outbox:
    """What waits for the sender, bounded (the module's docstring says how). Thread-safe: events and ticks put,
    the sender takes, a stop settles and drops."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.notices: deque[Item] = deque()
        self.more = More()
        self.summary: Item | None = None
        self.seq = 0
        self.sending: Item | None = None  # the one sender thread's item, while it delivers
        self.breaker = Breaker()

    def put(self, notice: Notice) -> None:
        with self.cond:
            self.seq += 1
            if len(self.notices) < MAX_QUEUED and not self.more.counts:
                self.notices.append(Item(self.seq, notice))
            else:  # behind a count, a notice would jump it: it joins the count
                self._count(self.seq, notice.target, Counter({notice.event: 1}))
            self.cond.notify_all()

    def put_summary(self, summary: Summary, seq: int | None = None) -> None:
        with self.cond:
            if seq is None:
                self.seq += 1
                seq = self.seq
            if self.summary:
                older, newer = sorted([self.summary, Item(seq, summary)], key=lambda i: i.what.until)
                summary, seq = older.what.widened(newer.what), min(older.seq, newer.seq)
            self.summary = Item(seq, summary)
            self.cond.notify_all()

    def _count(self, seq: int, target: str, counts: Counter) -> None:
        self.more.seq = min(self.more.seq, seq) if self.more.counts else seq
        self.more.target = target
        self.more.counts.update(counts)

    def next(self, stopping: threading.Event) -> Item | None:
        """The next item to deliver, waiting for one (and for the breaker's cool-off); None once ``stopping`` is set
        (by release): the sender thread then ends."""
        with self.cond:
            while not stopping.is_set():
                item = self._head()
                wait = self.breaker.wait(_target(item), time.monotonic()) if item else None
                if item and not wait:
                    self._remove(item)
                    self.sending = item
                    return item
                self.cond.wait(wait)
            return None

    def release(self, stopping: threading.Event) -> None:
        """Sets ``stopping`` and wakes the sender waiting in next(), which returns None (under the lock: a sender
        between its check and its wait is not missed)."""
        with self.cond:
            stopping.set()
            self.cond.notify_all()

    def _head(self) -> Item | None:
        """Notices in order, the count after them; the summary in its place, or first while the target fails."""
        rest = self.notices[0] if self.notices else Item(self.more.seq, self.more) if self.more.counts else None
        if self.summary and (rest is None or self.breaker.failures or self.summary.seq < rest.seq):
            return self.summary
        return rest

    def _remove(self, item: Item) -> None:
        if item is self.summary:
            self.summary = None
        elif self.notices and item is self.notices[0]:
            self.notices.popleft()
        else:
            self.more = More()

    def done(self, item: Item, ok: bool | None) -> str | None:
        """After a delivery: what failed goes back (a notice into the count); the breaker's change, if any. None:
        the notice could not be made (a bug, logged by the sender): dropped, and not the target's fault."""
        with self.cond:
            self.sending = None
            if ok is None:
                self.cond.notify_all()
                return None
            if ok or item.dropped:
                pass
            elif isinstance(item.what, Summary):
                self.put_summary(item.what, item.seq)
            else:
                counts = item.what.counts if isinstance(item.what, More) else Counter({item.what.event: 1})
                self._count(item.seq, _target(item), counts)
            change = self.breaker.record(_target(item), ok)
            self.cond.notify_all()
            return change

    @property
    def in_flight(self) -> int:
        return int(self.sending is not None)

    def pending(self) -> int:
        """Notices not yet delivered: queued, the count as one, the summary, the one in flight."""
        return len(self.notices) + bool(self.more.counts) + bool(self.summary) + self.in_flight

    def settle(self, timeout: float) -> None:
        """At a stop: one try now even if the breaker holds them, then wait (bounded) until all went out or the
        breaker holds them again."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.breaker.retry_at = time.monotonic()
            self.cond.notify_all()
            while self.pending() and (left := deadline - time.monotonic()) > 0:
                if self.breaker.wait(self.breaker.target, time.monotonic()) and not self.in_flight:
                    return  # the last try failed: waiting out the cool-off would only delay the stop
                self.cond.wait(left)

    def drop(self) -> dict:
        """Forgets what was not sent, and says what that was (for the stop's log line)."""
        with self.cond:
            lost = {"count": self.pending(), "photos_in_count": sum(self.more.counts.values()),
                    "summary": bool(self.summary), "in_flight": self.in_flight}
            self.notices.clear()
            self.more, self.summary = More(), None
            if self.sending:
                self.sending.dropped = True
            return lost


def _target(item: Item) -> str:
    return item.what.target
