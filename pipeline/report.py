"""`style-pipeline report`: one self-contained HTML page of what the night produced and what failed.

Self-contained (thumbnails as data: URIs, the loss curve as inline SVG) so the page can be mailed,
copied off the box or opened from a phone without the spool being reachable. It reads only the JSON
the daemon already writes, and tolerates missing keys: a log from an older version, or one cut short
by a crash, should cost one blank field, not the whole report; a log no version wrote (a hand edit, a foreign
tool) costs its own card, named in the page's problems, and nothing else.

A busy night is tens of thousands of outputs, and a card with pictures is ~74 kB of HTML and ~67 ms to make at
1024 px: full cards go to every failure and to the newest SHOWN_OUTPUTS outputs; the rest are counted per recipe and
listed by name (up to LISTED_OUTPUTS), so a page stops growing at ~15 MB (bench/bench_report_size.py).
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from urllib.parse import quote

from .engine.settings import DEFAULT_MAX_PIXELS
from .errors import UsageError
from .fsio import shown, write_atomic
from .report_logs import as_utc, logs_in_window, parse_time, recorded_file
from .report_pictures import PLOT_H, PLOT_W, RESULT_PX, Plot, curve_plot, curve_points, thumbnail_uri  # noqa: F401
from .report_pictures import finite_number as _number

MIN_RATE_IMAGES = 5  # fewer than this and images per hour says more about one photo than about the night
SHOWN_OUTPUTS = 200  # full cards (with pictures) for the newest this many outputs; the rest by name only
LISTED_OUTPUTS = 2000  # older outputs listed by name up to this many; beyond, one line says how many more
STOP_WORDS = {"steps": "all planned steps run", "early_stop": "stopped early: the loss stopped improving",
              "converged": "converged: no step could lower the loss", "cancelled": "cancelled"}
TEMPLATES = Path(__file__).parent / "templates"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass
class OutputCard:
    """One output as the page shows it."""

    name: str
    recipe: str
    input_name: str
    styles: list[str]
    losses: dict[str, float]
    steps: int | None
    stop_reason: str
    device: str
    seconds: float | None
    finished_at: datetime | None
    thumbs: dict[str, str]  # "content" / "style" / "result" -> data: URI, only those found
    curve: "Plot | None"
    job_id: str = ""
    steps_text: str = "?"
    image: Path | None = None  # the full-size output; each page links to it from where the page lies
    changed: list[str] = field(default_factory=list)  # "content" / "style": the file under its name is another now


@dataclass
class Entry:
    """One output log, read light: what the counts, the rate and the list of older outputs need (no pictures)."""

    path: Path
    log: dict
    recipe: str
    image: Path
    name: str  # the output, relative to its recipe's folder
    finished_at: datetime | None
    seconds: float | None
    device: str
    started: datetime | None
    batch: int = 1  # photos run together with it (the log's "batch"; absent: alone)


@dataclass
class FailureCard:
    file: str
    code: str
    message: str
    fix: str
    failed_at: datetime | None
    attempts: int | None
    thumb: str | None


@dataclass
class Summary:
    processed: int
    failed: int
    gpu_seconds: float
    cpu_seconds: float
    per_hour: float | None  # None: fewer than MIN_RATE_IMAGES, or no time span
    gpu_used: bool
    cpu_used: bool
    window: str
    generated_at: datetime
    problems: list[str] = field(default_factory=list)  # logs that could not be read
    older: list[Entry] = field(default_factory=list)  # outputs past SHOWN_OUTPUTS: listed, no card
    older_by_recipe: dict[str, int] = field(default_factory=dict)


MAX_SINCE = timedelta(days=3650)  # ten years: a longer look-back is a typo, and datetime overflows near 2.7 million


def parse_since(text: str) -> timedelta:
    """'12h', '90m', '2d', '1w', '1h30m' -> timedelta; a UsageError that shows the format otherwise."""
    parts = _DURATION.findall(text.lower())
    if not parts or _DURATION.sub("", text.lower()).strip():
        raise UsageError(f"--since {text!r}: expected a duration like 12h, 90m, 2d or 1h30m")
    try:  # 1000000d overflowed datetime's arithmetic: a traceback (rev9f #5)
        since = sum((timedelta(**{_UNITS[unit]: float(n)}) for n, unit in parts), timedelta())
    except OverflowError:
        since = None
    if since is None or since > MAX_SINCE:
        raise UsageError(f"--since {text!r}: at most {MAX_SINCE.days}d")
    return since


def _content_paths(done: Path, recipe: str, name: str, kept: str = "") -> list[Path]:
    """Where the input may lie as the spool left it: the log's kept_as, else done/ by name."""
    return [path for path in ((Path(kept),) if kept else ()) + (done / name, done / recipe / name) if name]


def _guarded(make, path: Path, root: Path, problems: list[str]):
    """make(), or None with "<file>: unreadable (...)" in `problems`: one log no version of the daemon wrote
    (a hand edit, a foreign tool) costs its own card, never the page."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - whatever the log holds, the rest of the report is still due
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        problems.append(f"{name}: unreadable ({type(exc).__name__}: {exc})")
        return None


def _inside(folder: Path, name: str) -> Path:
    """folder/name, refused when the name would lead out of it: the report shows only the outbox's own files."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"output name {name!r} lies outside the outbox")
    return folder / rel


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def entry(log_path: Path, log: dict, outbox: Path) -> Entry:
    """The light read of one output log; raises on a log that cannot be shown (see _guarded)."""
    out, recipe_dir = _dict(log.get("output")), log_path.parent.relative_to(outbox).parts[0]
    image = _inside(log_path.parent, str(out.get("name") or log_path.with_suffix(".png").name))
    finished, seconds = parse_time(log.get("finished_at")), _number(_dict(log.get("timings")).get("total"))
    return Entry(log_path, log, str(log.get("recipe") or recipe_dir), image,
                 image.relative_to(outbox / recipe_dir).as_posix(), finished, seconds,
                 str(log.get("device") or "?"), finished - timedelta(seconds=seconds or 0.0) if finished else None,
                 batch_of(log))


def batch_of(log: dict) -> int:
    """How many photos ran together with this one (worker.py writes "batch" over 1); 1 for junk or none."""
    batch = log.get("batch")
    return batch if type(batch) is int and batch > 1 else 1


def device_seconds(item: Entry) -> float:
    """The output's share of its device's time. The N photos of a batch each ran for the batch's whole wall time
    on one device at once, so each counts 1/N of it: summed over the night, the time the devices were optimizing,
    never N times it (a batch of 7 once read as 7 nights' work in one)."""
    return (item.seconds or 0.0) / item.batch


def output_card(item: Entry, done: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> OutputCard:
    log, thumb = item.log, partial(thumbnail_uri, max_pixels=max_pixels)
    inp = _dict(log.get("input"))
    styles = [s for s in _list(log.get("styles")) if isinstance(s, dict)]
    style = styles[0].get("path") if styles else None
    content, content_changed = recorded_file(_content_paths(done, item.recipe, str(inp.get("name") or ""),
                                                            str(inp.get("kept_as") or "")), inp.get("sha256"))
    painting, style_changed = recorded_file([Path(style)] if isinstance(style, str) and style else [],
                                            styles[0].get("sha256") if styles else None)
    thumbs = {"content": thumb(content), "style": thumb(painting), "result": thumb(item.image, RESULT_PX)}
    losses = {str(k): _number(v) for k, v in _dict(log.get("losses")).items() if _number(v) is not None}
    steps = log.get("steps") if isinstance(log.get("steps"), int) else None
    return OutputCard(
        name=item.name, recipe=item.recipe, input_name=str(inp.get("name") or "?"),
        styles=[str(s.get("name") or "?") for s in styles], losses=losses, steps=steps,
        stop_reason=str(log.get("stop_reason") or ""), device=item.device, seconds=item.seconds,
        finished_at=item.finished_at, thumbs={k: v for k, v in thumbs.items() if v},
        curve=curve_plot(_list(log.get("curve"))), job_id=str(log.get("job_id") or ""),
        steps_text=steps_text(log, steps), image=item.image,
        changed=[label for label, moved in (("content", content_changed), ("style", style_changed)) if moved])


def steps_text(log: dict, steps: int | None) -> str:
    """'25 (all planned steps run)' or '18 of 25 (stopped early: ...)', never 'steps 25 (steps)'."""
    if steps is None:
        return "?"
    settings, levels = _dict(log.get("settings")), len(_list(log.get("scales"))) or 1
    planned = None
    if all(isinstance(n, int) for n in _list(log.get("level_steps"))) and _list(log.get("level_steps")):
        planned = sum(log["level_steps"])  # what the run planned, whatever the scales' rule (rev9a #4)
    elif isinstance(settings.get("steps"), int):
        planned = settings["steps"] + (levels - 1) * int(_number(settings.get("coarse_steps"), 0))
    reason = str(log.get("stop_reason") or "")
    if planned is not None and steps >= planned and reason == "early_stop":
        reason = "steps"  # the stop test fired on the last planned step: nothing was cut short
    words = STOP_WORDS.get(reason, reason)
    count = f"{steps} of {planned}" if planned is not None and planned != steps else str(steps)
    return f"{count} ({words})" if words else count


def failure_card(path: Path, log: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> FailureCard:
    file = str(log.get("file") or path.name.removesuffix(".error.json"))
    attempts = log.get("attempts")
    return FailureCard(file=file, code=str(log.get("code") or "error"), message=str(log.get("message") or ""),
                       fix=str(log.get("fix") or ""), failed_at=parse_time(log.get("failed_at")),
                       attempts=attempts if isinstance(attempts, int) else None,
                       thumb=thumbnail_uri(path.parent / file, max_pixels=max_pixels))


def summarize(outputs: list[Entry], failures: list[FailureCard], since: timedelta | None,
              now: datetime, problems: list[str], until: datetime | None = None) -> Summary:
    """The figures over every output in the window, carded or not."""
    def busy(gpu: bool) -> float:
        return sum(device_seconds(c) for c in outputs if is_gpu(c.device) == gpu)

    finished = [c.finished_at for c in outputs if c.finished_at]
    # The rate over the night's actual work (first start to last finish), not over the report's window,
    # which would count the idle day as well.
    starts = [c.started for c in outputs if c.started]
    hours = (max(finished) - min(starts)).total_seconds() / 3600 if finished else 0
    window = f"last {_duration(since.total_seconds())}" if since else (f"since {shown_time(min(finished))}" if finished else "all")
    if until is not None:  # the scheduled report's: from where the last one ended (report_window.py)
        window = f"{shown_time(now - since) if since else 'the start'} to {shown_time(until)}"
    enough = len(outputs) >= MIN_RATE_IMAGES and hours > 0
    older = outputs[SHOWN_OUTPUTS:]
    return Summary(processed=len(outputs), failed=len(failures), gpu_seconds=busy(True), cpu_seconds=busy(False),
                   per_hour=len(outputs) / hours if enough else None, window=window, generated_at=now,
                   problems=problems, gpu_used=any(is_gpu(c.device) for c in outputs),
                   cpu_used=any(not is_gpu(c.device) for c in outputs), older=older,
                   older_by_recipe=dict(sorted(Counter(c.recipe for c in older).items())))


def is_gpu(device: str) -> bool:
    """'cuda', 'cuda:1', 'mps' are accelerators; 'cpu' and an unknown device count as CPU time."""
    return device.split(":")[0] not in ("cpu", "?", "")


@dataclass
class Night:
    """What a page shows, made once (the pictures are the cost) and rendered once per page written."""

    summary: Summary
    outputs: list[OutputCard]
    failures: list[FailureCard]
    state: list[str] = field(default_factory=list)  # the service's state at report time (report_state.py)


def collect(outbox: Path, failed: Path, since: timedelta | None = None, now: datetime | None = None,
            done: Path | None = None, until: datetime | None = None,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> Night:
    """Every log in the window (since before `now`, up to `until` if given) read light; full cards for the failures
    and the newest SHOWN_OUTPUTS outputs. `done` (where consumed inputs lie) defaults to the spool's done/ beside
    failed/; ``max_pixels``: the thumbnails' limit (config.read_max_pixels)."""
    now = as_utc(now or datetime.now(timezone.utc))
    cutoff = now - since if since else None
    done = done if done is not None else failed.parent / "done"
    problems: list[str] = unclaimable_problems(failed.parent)
    logs = (p for p in outbox.glob("*/**/*.json") if not any(part.startswith(".") for part in p.relative_to(outbox).parts))
    entries = [e for path, log in logs_in_window(logs, "finished_at", cutoff, problems, until)
               if (e := _guarded(lambda: entry(path, log, outbox), path, outbox, problems))]
    entries.sort(key=lambda e: e.finished_at or now, reverse=True)
    outputs = [c for e in entries[:SHOWN_OUTPUTS] if (c := _guarded(lambda: output_card(e, done, max_pixels), e.path, outbox, problems))]
    failures = [c for path, log in logs_in_window(failed.glob("*.error.json"), "failed_at", cutoff, problems, until)
                if (c := _guarded(lambda: failure_card(path, log, max_pixels), path, failed, problems))]
    return Night(summarize(entries, failures, since, now, problems, until), outputs, failures)


def unclaimable_problems(spool: Path) -> list[str]:
    """The photos the service could not take from the inbox (status.json's ``unclaimable``, still there): they are
    neither an output nor a failure, so without this line the page said nothing of them (rev7d finding 3)."""
    from .daemon.status import last_unclaimable
    return [f"{e.get('file')}: cannot be taken from the inbox ({e.get('error')}); fix: {e.get('fix')}"
            for e in last_unclaimable(spool)]


def render(night: Night, link_from: Path | None = None) -> str:
    """The HTML page; links to the full-size outputs are relative to `link_from` (the page's folder), else file: URLs."""
    def href(image: Path) -> str:
        # quoted from the bytes: a name with '#', '?' or bytes that are not UTF-8 still links to its file
        return quote(os.fsencode(Path(os.path.relpath(image, link_from)).as_posix())) if link_from \
            else image.resolve().as_uri()

    return _environment().get_template("report.html.j2").render(
        summary=night.summary, outputs=night.outputs, failures=night.failures, state=night.state,
        min_rate=MIN_RATE_IMAGES,
        plot_w=PLOT_W, plot_h=PLOT_H, href=href, listed=LISTED_OUTPUTS)


def build_report(outbox: Path, failed: Path, since: timedelta | None = None, now: datetime | None = None,
                 done: Path | None = None, link_from: Path | None = None) -> str:
    """collect and render: the page as one string."""
    return render(collect(outbox, failed, since, now, done), link_from)


def write_reports(paths: list[Path], outbox: Path, failed: Path, since: timedelta | None = None,
                  now: datetime | None = None, done: Path | None = None, state: list[str] | None = None,
                  until: datetime | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Path]:
    """The night collected once, each page written atomically (a browser or a mail job never reads half a page),
    its links relative to where it lies; ``state``: the service's state lines (report_state.service_state)."""
    night = collect(outbox, failed, since, now, done, until, max_pixels)
    night.state = state or []
    for path in paths:
        write_atomic(render(night, Path(path).resolve().parent).encode(), path)
    return list(paths)


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=lambda v: shown(v) if type(v) is str else v)  # names not UTF-8: \xe9
    env.filters["duration"] = _duration
    env.filters["when"] = shown_time
    return env


def shown_time(when: datetime | None) -> str:
    """Local time with its zone's name ('2026-11-28 16:52 PST'). The page is named by the local date and the timer
    fires at a local hour, so its times are read against the clock on the wall: in UTC, a page read at 16:52 in
    California said 'Generated 2026-11-29 00:53', another day than its name (rev7d)."""
    return f"{when.astimezone():%Y-%m-%d %H:%M %Z}" if when else "?"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"
