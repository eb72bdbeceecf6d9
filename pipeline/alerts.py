"""`notify:` tell a person when the night's queue is empty and when a photo fails (issue 11, item 16).

The target is one string in the config:
- an ``http://`` or ``https://`` URL: the message is POSTed as plain text with a ``Title`` header, which is
  what ntfy (``https://ntfy.sh/TOPIC``) and most webhook relays take;
- any other ``scheme://`` URL (``mailto://``, ``tgram://``, ``discord://`` ...): sent with apprise when it is
  installed (``pip install apprise``); `validate` says so when it is not;
- anything else is a command, split like a shell would (no shell runs): ``{event}``, ``{title}``,
  ``{message}`` in its arguments are replaced, the message is also on its stdin, and the environment has
  STYLE_PIPELINE_EVENT, STYLE_PIPELINE_TITLE and STYLE_PIPELINE_MESSAGE.

Sending runs on its own thread and never raises: a dead webhook must not stop the night. Each notice has a
whole-delivery deadline, not only urllib's per-read socket timeout: a server that drips a byte every few seconds
would otherwise hold the one sender thread, and every later notice, for ever.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from email.header import Header
from urllib.parse import urlsplit

import structlog

from .fsio import shown
from .notice_outbox import BREAK_AFTER, More, Notice, Outbox, Summary

log = structlog.get_logger("style-pipeline.alerts")
TIMEOUT = 20.0
FLUSH_WAIT = 2 * TIMEOUT  # seconds a stop keeps for the last notices (Alerts.flush)
TITLES = {"failed": "style-pipeline: {file} failed",  # a notice each, by the event's kind
          "unclaimable": "style-pipeline: {file} cannot be taken from the inbox",
          "paused": "style-pipeline: {file} cannot be written; claiming is paused"}


def check_target(target: str) -> str | None:
    """What is wrong with a `notify:` value, or None."""
    scheme = urlsplit(target).scheme if "://" in target else ""
    if scheme and scheme not in ("http", "https") and importlib.util.find_spec("apprise") is None:
        return (f"{scheme}:// URLs are sent with apprise, which is not installed: `pip install apprise`, "
                "or use an https:// URL or a command")
    if not scheme:
        try:
            words = shlex.split(target)
        except ValueError as exc:
            return f"cannot split the command ({exc}); check its quotes"
        if not words:
            return "is empty; give a command or a URL"
        if "/" in words[0] and re.fullmatch(r"[\w-]+(\.[\w-]+)+", words[0].split("/")[0]):  # ntfy.sh/topic
            return (f"{words[0]!r} is neither a URL nor a command: a URL needs its scheme, e.g. https://{words[0]}; "
                    "a command, its full path")
    return None


def command_problem(target: str | None) -> str | None:
    """A `notify:` command that cannot be found where this process looks, or None (a URL, none set). Not a config
    error: PATH is the reading process's, and `validate` in a shell sees a wider one than systemd gives the service,
    so the daemon warns at start and goes on (a night of photos is worth more than its notices) while `validate`
    refuses it (rev7a finding 7: a misspelt `loger` passed both, and every notice of the night was lost)."""
    if not target or "://" in target:
        return None
    try:
        words = shlex.split(target)
    except ValueError:
        return None  # check_target's to tell
    return _command_problem(words[0]) if words else None


SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"  # systemd's PATH for a service without one


def _command_problem(command: str) -> str | None:
    """A command no one can run loses every notice of the night to a log line (rev7a): README's ntfy topic without
    its https://, or a misspelt `loger`. It is looked up as the daemon will run it, on the PATH of the process that
    reads the config; `validate` run from a shell has the shell's PATH, wider than systemd's, hence the full path."""
    if shutil.which(command):
        return None
    if os.path.isabs(command):
        return f"command {command} does not exist or is not executable; check the path, or use an https:// URL"
    if "/" in command:
        return f"command {command} is not found from {os.getcwd()}; give its full path, or use an https:// URL"
    return (f"command {command!r} is not found on PATH ({os.environ.get('PATH', '')}); give its full path "
            f"(the service looks commands up on systemd's PATH, {SERVICE_PATH}, not your shell's), "
            "or an https:// URL (e.g. https://ntfy.sh/mytopic)")


MAX_GIVEN_UP = 4  # deliveries left hanging on a slow-drip target at once; past them, notices are not sent (rev7f)
_GIVEN_UP: list[threading.Thread] = []


def send(target: str, event: str, title: str, message: str) -> bool:
    """Deliver one notice, giving up after TIMEOUT seconds in all; True when it went out. Logs and swallows
    every failure. A delivery past its deadline is left to end on its own thread (a slow-drip server), so the
    notices behind it still go out."""
    title, message = shown(title), shown(message)  # a name not UTF-8 as \xe9: before, the notice was lost
    _GIVEN_UP[:] = [t for t in _GIVEN_UP if t.is_alive()]
    if len(_GIVEN_UP) >= MAX_GIVEN_UP:  # each holds a thread and a socket: a night of them reached the fd limit
        log.warning("notify failed", target=_safe(target), error=f"{len(_GIVEN_UP)} earlier notices still hang on "
                    "the target; this one is not sent")
        return False
    result: list[bool] = []
    helper = threading.Thread(target=lambda: result.append(_deliver(target, event, title, message)),
                              name="notify-send", daemon=True)
    helper.start()
    helper.join(TIMEOUT)
    if helper.is_alive():
        _GIVEN_UP.append(helper)
        log.warning("notify failed", target=_safe(target), error=f"no answer within {TIMEOUT:.0f} s; given up")
        return False
    return bool(result and result[0])


def header_text(text: str) -> str:
    """A header value http.client can send: ASCII as it is, anything else as an RFC 2047 encoded-word, which
    ntfy decodes. http.client encodes headers as Latin-1, so a CJK or Polish photo name raised and the failure
    notice was lost (rev7d); a Latin-1 name went out as raw bytes that ntfy reads as UTF-8 and shows broken."""
    if text.isascii() and text.isprintable():
        return text
    return Header(text, "utf-8").encode(linesep=" ")  # one line: several encoded-words, spaces between


def _deliver(target: str, event: str, title: str, message: str) -> bool:
    """The delivery itself, by the target's kind (see the module's docstring)."""
    try:
        if urlsplit(target).scheme in ("http", "https"):
            request = urllib.request.Request(target, data=message.encode(), method="POST",
                                             headers={"Title": header_text(title), "Tags": header_text(event),
                                                      "Content-Type": "text/plain; charset=utf-8"})
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return 200 <= response.status < 300
        if "://" in target:
            import apprise
            notifier = apprise.Apprise()
            notifier.add(target)
            return bool(notifier.notify(title=title, body=message))
        words = [w.replace("{event}", event).replace("{title}", title).replace("{message}", message)
                 for w in shlex.split(target)]
        env = {**os.environ, "STYLE_PIPELINE_EVENT": event, "STYLE_PIPELINE_TITLE": title,
               "STYLE_PIPELINE_MESSAGE": message}
        done = subprocess.run(words, input=message.encode(), env=env, timeout=TIMEOUT, capture_output=True)
        if done.returncode != 0:
            log.warning("notify command failed", code=done.returncode, stderr=done.stderr.decode(errors="replace")[-300:])
        return done.returncode == 0
    except Exception as exc:  # noqa: BLE001 - a notice must never stop the daemon
        log.warning("notify failed", target=_safe(target), error=f"{exc.__class__.__name__}: {exc}")
        return False


def _safe(target: str) -> str:
    """The target without a password or token in the URL, for the log."""
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or ''}" if parts.scheme else shlex.split(target)[0]


class Alerts:
    """Sends a notice per failure and one when the queue empties after work. Events arrive on the worker's thread,
    ticks on the main loop's; one sender thread delivers what the outbox (notice_outbox: bounded, a breaker for a
    failing target) hands it. The summary's counts come from disk (tally.py) when the daemon gives its folders, so
    a restart in the night does not lose the first part; without them (tests, tools) it counts in memory and says
    from when."""

    def __init__(self, tally=None, now: datetime | None = None) -> None:  # tally: a daemon.tally.Tally, handed in
        self.lock = threading.Lock()                                         # (never imported: layers run down)
        self.styled = self.failed = 0
        self.outbox = Outbox()
        self.sender: threading.Thread | None = None  # None after a flush: a notice after it starts a new one
        self.stopping = threading.Event()  # the sender's: set by flush, it ends
        self.tally, self.primed = tally, False
        self.last_sender: threading.Thread | None = None  # the sender a flush stopped: the next one waits for it
        self.counting_since = _edge(now, up=False)  # this daemon's start, then the last summary

    def on_event(self, target: str | None, kind: str, data: dict) -> None:
        with self.lock:
            self.styled += kind == "done"
            self.failed += kind == "failed"
        if kind in TITLES and target:
            self.outbox.put(Notice(target, kind, TITLES[kind].format(file=data.get("file")),
                                   f"{data.get('file')}: {data.get('reason')}: {data.get('message')}; "
                                   f"fix: {data.get('fix')}"))
            self._start()

    def tick(self, target: str | None, drained: bool, now: datetime | None = None) -> None:
        """Called each pass: once the queue is empty after work, one summary notice. `now` is the clock (a test's)."""
        if target and self.tally and not self.primed:  # the night's start is on disk before a restart can lose it
            self.primed = True
            self.tally.since(self.counting_since)
        if not drained:
            return
        with self.lock:
            styled, failed, self.styled, self.failed = self.styled, self.failed, 0, 0
        if not (styled or failed):
            return
        since = self.counting_since
        until = self.counting_since = max(since, _edge(now, up=True))  # a clock stepped back: never a window back
        if target:
            self.outbox.put_summary(Summary(target, since, until, styled, failed))
            self._start()

    def _summary(self, summary: Summary) -> tuple[str, datetime]:
        """The text, and the end to remember once it is delivered. The counts are from disk since the last summary
        sent (on the sender thread: a busy outbox costs a stat per output), never below this run's own. Why: a wall
        clock stepped back in the night (NTP, a VM resumed) stamps the next outputs before the last summary's end,
        outside every window: the morning said 0 styled for 2, and the window's end, moved back, had the next
        summary count the earlier ones again."""
        if not self.tally:
            return _summary_text(summary.styled, summary.failed, summary.since), summary.until
        since = self.tally.since(summary.since)
        styled, failed = self.tally.count(since, summary.until)
        return _summary_text(max(summary.styled, styled), max(summary.failed, failed), since), max(since, summary.until)

    def _start(self) -> None:
        with self.lock:
            if self.sender is None:
                self.stopping = threading.Event()
                self.sender = threading.Thread(target=self._send_all, args=(self.stopping, self.last_sender),
                                               name="notify", daemon=True)
                self.sender.start()

    def _send_all(self, stopping: threading.Event, before: threading.Thread | None) -> None:
        """The sender thread, until flush stops it. ``before``: the last flush's sender, which may still end its
        last delivery (a slow target, TIMEOUT at most): one sender at a time, the outbox tracks one in flight."""
        if before is not None:
            before.join()
        while (item := self.outbox.next(stopping)) is not None:
            ok = None  # raised: dropped, as before, and not counted against the target
            try:
                ok = self._send(item.what)
            except Exception as exc:  # noqa: BLE001 - the sender thread must outlive one bad summary
                log.warning("notify failed", target=_safe(item.what.target), error=f"{exc.__class__.__name__}: {exc}")
            change = self.outbox.done(item, ok)
            if change == "opened":
                log.warning("notify target failed each of the last notices; holding the rest", target=_safe(
                    item.what.target), failures=BREAK_AFTER, retry_in_s=self.outbox.breaker.cool_off)
            elif change == "closed":
                log.info("notify target answers again; sending the held notices", target=_safe(item.what.target),
                         held=self.outbox.pending())

    def _send(self, what: Notice | Summary | More) -> bool:
        if isinstance(what, Notice):
            return send(what.target, what.event, what.title, what.message)
        if isinstance(what, More):
            return send(what.target, "more", f"style-pipeline: {what.title()}",
                        f"{what.title()} (see `style-pipeline report`)")
        text, until = self._summary(what)
        sent = send(what.target, "queue_empty", "style-pipeline: the queue is empty", text)
        if sent and self.tally:
            self.tally.remember(until)  # only once told: a summary not delivered is counted in the next one
        return sent

    def pending(self) -> int:
        """Notices not yet delivered (the in-flight one included)."""
        return self.outbox.pending()

    def flush(self, timeout: float = FLUSH_WAIT) -> None:
        """At shutdown: let the notices in flight go out (bounded), so `once` delivers its summary; say what could
        not (before, it was dropped without a word)."""
        deadline = time.monotonic() + timeout
        self.outbox.settle(timeout)
        lost = self.outbox.drop()
        if lost["count"]:
            log.warning("notices not sent at stop", **lost, target=_safe(self.outbox.breaker.target or "?"))
        self._stop_sender(max(0.0, deadline - time.monotonic()))

    def _stop_sender(self, timeout: float) -> None:
        """The sender thread ends: before, it waited idle for ever, one more left by each Daemon run in a process
        that embeds it (tests, `once`, the Python API). Waited for until ``timeout``; a delivery still in flight
        then (counted above as not sent) ends on its own within TIMEOUT, and the thread with it."""
        with self.lock:
            sender, stopping = self.sender, self.stopping
            self.sender, self.last_sender = None, sender or self.last_sender
        if sender is not None:
            self.outbox.release(stopping)
            sender.join(timeout)


def _edge(now: datetime | None, up: bool) -> datetime:
    """A window's edge on a whole millisecond, the precision the logs stamp (spool_job.now_iso). Taken to the
    microsecond, an output finished in the daemon's first millisecond, or in a summary's own, was stamped outside
    the window it happened in, and the morning said 5 styled for 6 (seen in CI). The start rounds down and each
    summary rounds up, so the windows still abut and each output is counted once."""
    when = now or datetime.now(timezone.utc)
    rest = when.microsecond % 1000
    return when.replace(microsecond=when.microsecond - rest) + (timedelta(milliseconds=1) if up and rest else
                                                                timedelta(0))


def _summary_text(styled: int, failed: int, since: datetime) -> str:
    """The summary says from when it counts, in local time (the time the reader's clock shows)."""
    local = since.astimezone()
    when = local.strftime("%H:%M %Z") if local.date() == datetime.now().astimezone().date() \
        else local.strftime("%Y-%m-%d %H:%M %Z")
    return f"{styled} styled, {failed} failed since {when}; nothing left in the inbox"
