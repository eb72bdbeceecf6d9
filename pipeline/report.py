"""`style-pipeline report`: one self-contained HTML page of what the night produced and what failed.

Self-contained (thumbnails as data: URIs, the loss curve as inline SVG) so the page can be mailed,
copied off the box or opened from a phone without the spool being reachable. It reads only the JSON
the daemon already writes, and tolerates missing keys: a log from an older version, or one cut short
by a crash, should cost one blank field, not the whole report.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image, ImageOps

from .fsio import write_atomic

THUMB_PX = 160  # content and style: small beside the result
RESULT_PX = 512  # the result is the largest picture on a card
MIN_RATE_IMAGES = 5  # fewer than this and images per hour says more about one photo than about the night
PLOT_W, PLOT_H = 260, 90  # the loss curve's plot area, in px, inside its axes
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
    href: str = ""  # the full-size output, relative to the report's folder


@dataclass
class Plot:
    """The loss curve with what its axes need: the polyline and the first/last step and loss."""

    points: str
    first_step: int
    last_step: int
    top: str
    bottom: str
    log: bool


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


def parse_since(text: str) -> timedelta:
    """'12h', '90m', '2d', '1w', '1h30m' -> timedelta; a ValueError that shows the format otherwise."""
    parts = _DURATION.findall(text.lower())
    if not parts or _DURATION.sub("", text.lower()).strip():
        raise ValueError(f"--since {text!r}: expected a duration like 12h, 90m, 2d or 1h30m")
    return sum((timedelta(**{_UNITS[unit]: float(n)}) for n, unit in parts), timedelta())


def parse_time(value: object) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; junk or missing -> None."""
    try:
        return as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def as_utc(when: datetime) -> datetime:
    """Naive means UTC: the daemon writes UTC, and aware and naive datetimes do not compare."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def thumbnail_uri(path: Path | None, px: int = THUMB_PX) -> str | None:
    """A data: URI of the image shrunk to ``px``, or None when it is missing or will not decode."""
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.thumbnail((px, px))
            alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img = img.convert("RGBA" if alpha else "RGB")
            buf = io.BytesIO()
            img.save(buf, "PNG" if alpha else "JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    mime = "image/png" if alpha else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def curve_points(curve: list[dict], width: int = 240, height: int = 60) -> str:
    """SVG polyline points for the loss curve, log-scaled: the loss falls by orders of magnitude."""
    pts = [(_number(p.get("step"), i), float(p["loss"])) for i, p in enumerate(curve or [])
           if isinstance(p, dict) and isinstance(p.get("loss"), (int, float)) and math.isfinite(p["loss"])]
    if len(pts) < 2:
        return ""
    positive = all(y > 0 for _, y in pts)
    ys = [math.log10(y) if positive else y for _, y in pts]
    x0, x1, y0, y1 = pts[0][0], pts[-1][0], min(ys), max(ys)
    sx = (width - 4) / ((x1 - x0) or 1)
    sy = (height - 4) / ((y1 - y0) or 1)
    return " ".join(f"{2 + (x - x0) * sx:.1f},{height - 2 - (y - y0) * sy:.1f}" for (x, _), y in zip(pts, ys))


def curve_plot(curve: list[dict]) -> Plot | None:
    """The curve in the card's plot area, and its axis labels; None with fewer than two points."""
    points = curve_points(curve, PLOT_W, PLOT_H)
    if not points:
        return None
    pts = [p for p in curve if isinstance(p, dict) and _number(p.get("loss")) is not None
           and math.isfinite(p["loss"])]
    losses = [float(p["loss"]) for p in pts]
    steps = [int(_number(p.get("step"), i)) for i, p in enumerate(pts)]
    return Plot(points, steps[0], steps[-1], f"{max(losses):.3g}", f"{min(losses):.3g}", min(losses) > 0)


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
        problems.append(f"{path.name}: not a JSON object")
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: {exc}")
    return None


def _logs(paths, time_key: str, cutoff: datetime | None, problems: list[str]):
    """(path, log) for each readable log inside the window; the unreadable ones go to `problems`."""
    for path in sorted(paths):
        log = _read_json(path, problems)
        if log is not None and _since_ok(parse_time(log.get(time_key)), path, cutoff):
            yield path, log


def _since_ok(when: datetime | None, path: Path, cutoff: datetime | None) -> bool:
    """Inside the window; a log with no usable timestamp is judged by its file's mtime."""
    if cutoff is None:
        return True
    when = when or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return when >= cutoff


def _content_path(done: Path, recipe: str, name: str, kept: str = "") -> Path | None:
    """The input as the spool left it in done/ (the log's kept_as; else by name), if it is still there."""
    for path in ((Path(kept),) if kept else ()) + (done / name, done / recipe / name):
        if name and path.is_file():
            return path
    return None


def _number(value: object, default: float | None = None) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def output_card(log_path: Path, log: dict, done: Path, outbox: Path, link_from: Path | None) -> OutputCard:
    inp, out = _dict(log.get("input")), _dict(log.get("output"))
    styles = [s for s in _list(log.get("styles")) if isinstance(s, dict)]
    rel = log_path.parent.relative_to(outbox)
    recipe = str(log.get("recipe") or rel.parts[0])
    image = log_path.parent / str(out.get("name") or log_path.with_suffix(".png").name)
    style_path = Path(styles[0]["path"]) if styles and styles[0].get("path") else None
    thumbs = {"content": thumbnail_uri(_content_path(done, recipe, str(inp.get("name") or ""),
                                                     str(inp.get("kept_as") or ""))),
              "style": thumbnail_uri(style_path), "result": thumbnail_uri(image, RESULT_PX)}
    losses = {str(k): v for k, v in _dict(log.get("losses")).items() if _number(v) is not None}
    steps = log.get("steps") if isinstance(log.get("steps"), int) else None
    return OutputCard(
        name=image.relative_to(outbox / rel.parts[0]).as_posix(), recipe=recipe,
        input_name=str(inp.get("name") or "?"), styles=[str(s.get("name") or "?") for s in styles], losses=losses,
        steps=steps, stop_reason=str(log.get("stop_reason") or ""), device=str(log.get("device") or "?"),
        seconds=_number(_dict(log.get("timings")).get("total")), finished_at=parse_time(log.get("finished_at")),
        thumbs={k: v for k, v in thumbs.items() if v}, curve=curve_plot(_list(log.get("curve"))),
        job_id=str(log.get("job_id") or ""), steps_text=steps_text(log, steps),
        href=Path(os.path.relpath(image, link_from)).as_posix() if link_from else image.resolve().as_uri())


def steps_text(log: dict, steps: int | None) -> str:
    """'25 (all planned steps run)' or '18 of 25 (stopped early: ...)', never 'steps 25 (steps)'."""
    if steps is None:
        return "?"
    settings, levels = _dict(log.get("settings")), len(_list(log.get("scales"))) or 1
    planned = None
    if isinstance(settings.get("steps"), int):
        planned = settings["steps"] + (levels - 1) * int(_number(settings.get("coarse_steps"), 0))
    reason = str(log.get("stop_reason") or "")
    if planned is not None and steps >= planned and reason == "early_stop":
        reason = "steps"  # the stop test fired on the last planned step: nothing was cut short
    words = STOP_WORDS.get(reason, reason)
    count = f"{steps} of {planned}" if planned is not None and planned != steps else str(steps)
    return f"{count} ({words})" if words else count


def failure_card(path: Path, log: dict) -> FailureCard:
    file = str(log.get("file") or path.name.removesuffix(".error.json"))
    attempts = log.get("attempts")
    return FailureCard(file=file, code=str(log.get("code") or "error"), message=str(log.get("message") or ""),
                       fix=str(log.get("fix") or ""), failed_at=parse_time(log.get("failed_at")),
                       attempts=attempts if isinstance(attempts, int) else None,
                       thumb=thumbnail_uri(path.parent / file))


def summarize(outputs: list[OutputCard], failures: list[FailureCard], since: timedelta | None,
              now: datetime, problems: list[str]) -> Summary:
    def busy(gpu: bool) -> float:
        return sum(c.seconds or 0.0 for c in outputs if is_gpu(c.device) == gpu)

    finished = [c.finished_at for c in outputs if c.finished_at]
    # The rate over the night's actual work (first start to last finish), not over the report's window,
    # which would count the idle day as well.
    starts = [c.finished_at - timedelta(seconds=c.seconds or 0.0) for c in outputs if c.finished_at]
    hours = (max(finished) - min(starts)).total_seconds() / 3600 if finished else 0
    window = f"last {_duration(since.total_seconds())}" if since else (f"since {min(finished):%Y-%m-%d %H:%M} UTC" if finished else "all")
    enough = len(outputs) >= MIN_RATE_IMAGES and hours > 0
    return Summary(processed=len(outputs), failed=len(failures), gpu_seconds=busy(True), cpu_seconds=busy(False),
                   per_hour=len(outputs) / hours if enough else None, window=window, generated_at=now,
                   problems=problems, gpu_used=any(is_gpu(c.device) for c in outputs),
                   cpu_used=any(not is_gpu(c.device) for c in outputs))


def is_gpu(device: str) -> bool:
    """'cuda', 'cuda:1', 'mps' are accelerators; 'cpu' and an unknown device count as CPU time."""
    return device.split(":")[0] not in ("cpu", "?", "")


def build_report(outbox: Path, failed: Path, since: timedelta | None = None, now: datetime | None = None,
                 done: Path | None = None, link_from: Path | None = None) -> str:
    """The HTML page. `done` (where consumed inputs lie) defaults to the spool's done/ beside failed/;
    links to the full-size outputs are relative to `link_from` (the report's folder), else file: URLs."""
    now = as_utc(now or datetime.now(timezone.utc))
    cutoff = now - since if since else None
    done = done if done is not None else failed.parent / "done"
    problems: list[str] = []
    logs = (p for p in outbox.glob("*/**/*.json") if not any(part.startswith(".") for part in p.relative_to(outbox).parts))
    outputs = [output_card(path, log, done, outbox, link_from)
               for path, log in _logs(logs, "finished_at", cutoff, problems)]
    failures = [failure_card(path, log) for path, log in _logs(failed.glob("*.error.json"), "failed_at",
                                                               cutoff, problems)]
    outputs.sort(key=lambda c: c.finished_at or now, reverse=True)
    summary = summarize(outputs, failures, since, now, problems)
    return _environment().get_template("report.html.j2").render(
        summary=summary, outputs=outputs, failures=failures, min_rate=MIN_RATE_IMAGES, plot_w=PLOT_W, plot_h=PLOT_H)


def write_report(out_path: Path, outbox: Path, failed: Path, since: timedelta | None = None,
                 now: datetime | None = None, done: Path | None = None) -> Path:
    """build_report, written atomically so a browser or a mail job never reads half a page."""
    html = build_report(outbox, failed, since, now, done, link_from=Path(out_path).resolve().parent)
    write_atomic(html.encode(), out_path)
    return out_path


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["duration"] = _duration
    env.filters["when"] = lambda d: f"{d:%Y-%m-%d %H:%M} UTC" if d else "?"
    return env


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"
