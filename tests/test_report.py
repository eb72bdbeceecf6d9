"""The HTML report from a small fake spool, read back with the stdlib HTML parser; and the contact sheet."""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pipeline.daemon.outputs import contact_sheet
from pipeline.report import build_report, curve_points, parse_since, steps_text, write_reports

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples"
STYLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "styles"
NOW = datetime(2026, 11, 28, 7, 0, tzinfo=timezone.utc)


class Page(HTMLParser):
    """Text grouped by the nearest enclosing class, and every <img>'s class and src."""

    VOID = {"img", "meta", "br", "link", "input", "polyline"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, list[str]] = defaultdict(list)
        self.images: list[tuple[str, str]] = []
        self.polylines: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("class", ""), attrs["src"]))
        if tag == "polyline":
            self.polylines.append(attrs["points"])
        if tag not in self.VOID:
            self.stack.append(attrs.get("class"))

    def handle_endtag(self, tag):
        if tag not in self.VOID:
            self.stack.pop()

    def handle_data(self, data):
        if data.strip():
            self.text[next((c for c in reversed(self.stack) if c), "")].append(" ".join(data.split()))

    def all_text(self, cls: str) -> str:
        return " | ".join(self.text[cls])


def _png(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as img:
        img.convert("RGB").resize((32, 32)).save(dest)
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _output(spool: Path, recipe: str, sample: str, style: str, finished: datetime, loss: float,
            device: str = "cuda:0", seconds: float = 600.0) -> None:
    stem = Path(sample).stem
    out = _png(SAMPLES / sample, spool / "outbox" / recipe / f"{stem}.png")
    kept = _png(SAMPLES / sample, spool / "done" / sample.replace(".jpg", ".png"))
    log = {"job_id": f"job-{stem}", "recipe": recipe,
           "input": {"name": kept.name, "bytes": 1234, "sha256": _sha256(kept)},
           "styles": [{"name": style, "sha256": _sha256(STYLES / style), "path": str(STYLES / style)}],
           "output": {"name": out.name, "sha256": "ef" * 32, "size": [32, 32]},
           "losses": {"total": loss, "content": loss / 2, "style": loss / 3, "tv": 0.5},
           "curve": [{"step": s, "loss": loss * 100 / (s + 1), "scale": 1} for s in range(0, 300, 50)],
           "steps": 300, "stop_reason": "early_stop", "device": device, "timings": {"total": seconds},
           "queued_at": (finished - timedelta(hours=1)).isoformat(),
           "started_at": (finished - timedelta(seconds=seconds)).isoformat(),
           "finished_at": finished.isoformat().replace("+00:00", "Z"), "contact_sheet": None}
    (out.parent / f"{stem}.json").write_text(json.dumps(log))


def _failure(spool: Path, name: str, code: str, message: str, fix: str, when: datetime, data: bytes) -> None:
    failed = spool / "failed"
    failed.mkdir(parents=True, exist_ok=True)
    (failed / name).write_bytes(data)
    (failed / f"{name}.error.json").write_text(json.dumps(
        {"file": name, "code": code, "message": message, "fix": fix, "failed_at": when.isoformat(), "attempts": 2}))


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    _output(tmp_path, "starry", "coffee.jpg", "starry_night.jpg", NOW - timedelta(hours=2), 1234.5)
    _output(tmp_path, "scream", "rocket.jpg", "the_scream.jpg", NOW - timedelta(hours=5), 987.25,
            device="cpu", seconds=1800)
    _output(tmp_path, "starry", "astronaut.jpg", "starry_night.jpg", NOW - timedelta(days=3), 55.5)
    small = io.BytesIO()
    Image.new("RGB", (40, 20), "red").save(small, "JPEG")
    _failure(tmp_path, "truncated.jpg", "bad_image", "image file is truncated <b>", "Export it again.",
             NOW - timedelta(hours=1), b"\xff\xd8\xff not really a jpeg")
    _failure(tmp_path, "huge.jpg", "too_large", "20000x20000 is over max_pixels", "Resize below 40 MP.",
             NOW - timedelta(hours=3), small.getvalue())
    return tmp_path


def test_report_lists_outputs_and_failures(spool):
    page = Page(build_report(spool / "outbox", spool / "failed", since=timedelta(hours=12), now=NOW))
    names = page.all_text("name")
    assert "starry / coffee.png" in names and "scream / rocket.png" in names
    assert "astronaut" not in names  # 3 days old: outside --since 12h
    assert page.all_text("recipe") == "starry | scream"  # newest first
    assert "total 1234" in page.all_text("losses") and "total 987.2" in page.all_text("losses")
    assert page.all_text("input") == "coffee.png | rocket.png"
    assert "starry_night.jpg" in page.all_text("styles")
    assert page.all_text("processed") == "2" and page.all_text("failed-count") == "2"
    assert page.all_text("per-hour") == "-"  # 2 images: too few to give a rate
    assert "too few images to say" in page.all_text("summary")
    assert "10m 00s on cuda:0" in page.all_text("time") and "30m 00s on cpu" in page.all_text("time")
    assert page.all_text("file") == "huge.jpg | truncated.jpg"
    reasons = page.all_text("reason")
    assert "bad_image" in reasons and "image file is truncated <b>" in reasons  # escaped, read back as text
    assert "too_large" in reasons and "Resize below 40 MP." in page.all_text("fix")
    assert len(page.polylines) == 2


def test_thumbnails_are_data_uris(spool):
    page = Page(build_report(spool / "outbox", spool / "failed", since=timedelta(hours=12), now=NOW))
    kinds = [cls for cls, _ in page.images]
    assert kinds.count("content") == 2 and kinds.count("style") == 2 and kinds.count("result") == 2
    assert kinds.count("input") == 1  # the truncated failure has no thumbnail, and no crash
    for _, src in page.images:
        head, payload = src.split(",", 1)
        assert head in ("data:image/jpeg;base64", "data:image/png;base64")
        with Image.open(io.BytesIO(base64.b64decode(payload))) as img:
            assert max(img.size) <= 512


def test_a_card_shows_a_picture_only_while_its_name_holds_the_file_the_log_hashed(tmp_path, monkeypatch):
    """rev8c finding 5: cards took their content and style pictures by name, and names are reused: (a) a painting
    replaced under its name showed beside every result made with the old one; (b) a pruned done/ refilled by the
    next night's IMG_0001.jpg showed that photo as the content of the earlier IMG_0001 card. A picture is shown only
    when its sha256 is the log's, else the card says "changed since"; each file is hashed once for the page."""
    styles = tmp_path / "styles"
    styles.mkdir()
    painting = styles / "mine.jpg"
    painting.write_bytes((STYLES / "starry_night.jpg").read_bytes())
    for sample in ("coffee.jpg", "rocket.jpg", "astronaut.jpg"):
        _output(tmp_path, "starry", sample, "starry_night.jpg", NOW - timedelta(hours=2), 10.0)
        log_path = tmp_path / "outbox" / "starry" / sample.replace(".jpg", ".json")
        log = json.loads(log_path.read_text())
        log["styles"][0]["path"] = str(painting)  # made with the painting now under styles/mine.jpg
        log_path.write_text(json.dumps(log))
    hashed = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda handle, name: hashed.append(handle.name) or real(handle, name))

    def kinds() -> list[str]:
        page = Page(build_report(tmp_path / "outbox", tmp_path / "failed", now=NOW))
        return sorted([cls for cls, _ in page.images] + page.text["changed"])

    assert kinds() == ["content"] * 3 + ["result"] * 3 + ["style"] * 3
    painting.write_bytes((STYLES / "the_scream.jpg").read_bytes())  # (a) a new picture under the painting's name
    (tmp_path / "done" / "coffee.png").unlink()  # (b) done/ pruned, and the next night's coffee.png is another photo
    _png(SAMPLES / "rocket.jpg", tmp_path / "done" / "coffee.png")
    changed = "changed since (another picture now has its name)"
    assert kinds() == ["content"] * 2 + [f"content: {changed}"] + ["result"] * 3 + [f"style: {changed}"] * 3
    assert len(hashed) == 4 + 2, "a painting on three cards is hashed once a version, each photo in done/ once"


def test_without_since_everything_and_missing_pieces(spool):
    (spool / "done" / "coffee.png").unlink()  # content gone from done/: the card just lacks it
    (spool / "outbox" / "starry" / "broken.json").write_text("{not json")
    (spool / "outbox" / "scream" / "sparse.json").write_text("{}")
    (spool / "outbox" / "scream" / "odd.json").write_text(json.dumps(
        {"losses": "low", "timings": [], "curve": "down", "styles": {}, "steps": "many", "input": None}))
    page = Page(build_report(spool / "outbox", spool / "failed", now=NOW))
    assert "starry / astronaut.png" in page.all_text("name") and page.all_text("processed") == "5"
    assert [c for c, _ in page.images].count("content") == 2
    assert "broken.json" in " ".join(page.text[""])


def test_write_reports_is_atomic_and_complete(spool, monkeypatch):
    """A browser or the mail job never reads half a page: write_reports, what `report` runs, writes each page through
    fsio.write_atomic. The test before looked only for </html> and no dot-file, which a plain write_bytes passed as
    well (rev9d). Here the rename that ends the write fails (a full disk, a kill just before it): yesterday's page
    stays whole, no temp is left, and each page went through the atomic helper."""
    from pipeline import fsio, report

    pages = [spool / "outbox" / "reports" / "d.html", spool / "report.html"]
    pages[0].parent.mkdir()
    written = []

    def spy(data, path):
        written.append(path)
        return fsio.write_atomic(data, path)

    monkeypatch.setattr(report, "write_atomic", spy)
    assert write_reports(pages, spool / "outbox", spool / "failed", now=NOW) == pages
    assert written == pages and all(p.read_text().rstrip().endswith("</html>") for p in pages)
    pages[1].write_text("<html>yesterday's page</html>")

    def rename_fails(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsio.os, "replace", rename_fails)
    with pytest.raises(OSError):
        write_reports(pages[1:], spool / "outbox", spool / "failed", now=NOW)
    assert pages[1].read_text() == "<html>yesterday's page</html>"
    assert [p.name for p in spool.rglob(".*")] == []


def test_parse_since():
    assert parse_since("12h") == timedelta(hours=12) and parse_since("1h30m") == timedelta(minutes=90)
    assert parse_since("2d") == timedelta(days=2) and parse_since("45s") == timedelta(seconds=45)
    for bad in ("", "12", "tomorrow", "12h x"):
        with pytest.raises(ValueError, match="like 12h"):
            parse_since(bad)


def test_a_since_past_ten_years_is_a_usage_error_not_an_overflow_traceback(tmp_path, capsys):
    """rev9f #5: `report --since 1000000d` overflowed timedelta (99999999999d the sum): a traceback, exit 1."""
    from daemon_helpers import make_config
    from pipeline.cli import main

    assert parse_since("3650d") == timedelta(days=3650)
    for text in ("3651d", "1000000d", "99999999999d"):
        with pytest.raises(ValueError, match="at most 3650d"):
            parse_since(text)
    assert main(["report", "--config", str(make_config(tmp_path)), "--since", "1000000d"]) == 2
    assert "--since '1000000d': at most 3650d" in capsys.readouterr().err


def test_curve_points():
    assert curve_points([]) == "" and curve_points([{"step": 0, "loss": 1.0}]) == ""
    pts = [tuple(map(float, p.split(","))) for p in curve_points(
        [{"step": 0, "loss": 1000.0}, {"step": 10, "loss": 10.0}, {"step": 20, "loss": 1.0}]).split()]
    assert pts[0] == (2.0, 2.0) and pts[-1] == (238.0, 58.0) and pts[1][1] == pytest.approx(39.3, abs=0.1)


def test_contact_sheet(tmp_path):
    imgs = [Image.open(p).resize((w, 24)) for p, w in zip(sorted(SAMPLES.glob("*.jpg")), (30, 20, 32))]
    out = contact_sheet(*imgs, tmp_path / "sheet.png")
    with Image.open(out) as sheet:
        sheet.load()
        assert sheet.format == "PNG" and sheet.size == (82, 24)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]


def _cpu_night(root: Path, count: int) -> None:
    """`count` outputs made on a CPU, 20 minutes apart, one in an album folder, results 600x400."""
    for i in range(count):
        rel = f"starry/vacation/p{i}.png" if i == 0 else f"starry/p{i}.png"
        out = root / "outbox" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(SAMPLES / "rocket.jpg") as img:
            img.convert("RGB").resize((600, 400)).save(out)
        kept = _png(SAMPLES / "coffee.jpg", root / "done" / f"p{i}-1.png")
        finished = NOW - timedelta(minutes=20 * i)
        log = {"job_id": f"j{i}", "recipe": "starry", "input": {"name": f"p{i}.png", "kept_as": str(kept)},
               "styles": [{"name": "starry_night.jpg", "path": str(STYLES / "starry_night.jpg")}],
               "output": {"name": out.name, "size": [600, 400]}, "losses": {"total": 10.0},
               "curve": [{"step": 0, "loss": 1000.0}, {"step": 10, "loss": 50.0}, {"step": 18, "loss": 10.0}],
               "steps": 18 if i else 25, "stop_reason": "early_stop" if i else "steps",
               "settings": {"steps": 25, "coarse_steps": 100}, "scales": [[600, 400]], "device": "cpu",
               "timings": {"total": 600.0}, "finished_at": finished.isoformat()}
        out.with_suffix(".json").write_text(json.dumps(log))


def test_report_figures_say_what_they_mean(tmp_path):
    """Issue 11, item 6: no GPU time on a CPU box, a rate only from enough images, steps in words, a curve
    with axes, the result the largest picture, and a link to each full-size output."""
    _cpu_night(tmp_path, 5)
    (tmp_path / "outbox" / "reports").mkdir()
    [out] = write_reports([tmp_path / "outbox" / "reports" / "2026-11-28.html"], tmp_path / "outbox",
                          tmp_path / "failed", now=NOW, done=tmp_path / "done")
    html = out.read_text()
    page = Page(html)
    assert "on GPU" not in html and page.all_text("cpu-time") == "50m 00s"
    assert page.all_text("per-hour") == "3.3"  # 5 images in 1.5 h: the first start (-90 min) to the last finish
    steps = page.all_text("steps").split(" | ")
    assert "25 (all planned steps run)" in steps and "18 of 25 (stopped early: the loss stopped improving)" in steps
    assert not any("(steps)" in s for s in steps)
    assert steps_text({"stop_reason": "early_stop", "settings": {"steps": 30}}, 30) == "30 (all planned steps run)"
    assert steps_text({"stop_reason": "converged", "settings": {"steps": 30, "coarse_steps": 100}, "scales": [[8, 8], [16, 16]]}, 40) \
        == "40 of 130 (converged: no step could lower the loss)"
    for cls, text in (("x-first", "0"), ("x-last", "18"), ("x-title", "step"), ("y-top", "1e+03"),
                      ("y-bottom", "10"), ("y-title", "loss (log scale)")):
        assert page.all_text(cls).split(" | ")[0] == text, cls
    sizes: dict[str, list[int]] = defaultdict(list)
    for cls, src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            sizes[cls].append(max(img.size))
    assert min(sizes["result"]) == 512 and max(sizes["content"] + sizes["style"]) <= 160
    links = {href for href in re.findall(r'href="([^"]+)"', html)}
    assert "../starry/vacation/p0.png" in links
    for href in links:
        assert (out.parent / href).is_file(), href
    assert "vacation/p0.png" in page.all_text("name")


def test_a_batched_night_counts_each_batch_once(tmp_path):
    """rev7d finding 1: each photo of a batch ran for the batch's whole wall time, so the report's "time optimizing"
    and the metrics' job_seconds_sum added a batch N times (17.9 s in a 10.7 s night on one CPU slot). One slot,
    batch: 3, three photos (two share a shape and batch, one runs alone): neither may exceed the night's span."""
    import os
    import shutil
    import subprocess
    import sys

    from daemon_helpers import ROOT, make_config
    from test_observe import parse_textfile

    from pipeline.report import collect

    config = make_config(tmp_path, batch=3, devices=["cpu"], metrics_seconds=0.5,
                         defaults={"size": 48, "steps": 30, "format": "png", "early_stop_tol": 0})
    for i, name in enumerate(("coffee.jpg", "rocket.jpg", "coffee.jpg")):
        shutil.copy(SAMPLES / name, tmp_path / "inbox" / f"p{i}.jpg")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    night = collect(tmp_path / "outbox", tmp_path / "spool" / "failed", since=timedelta(hours=1))
    assert night.summary.processed == 3
    batches = sorted(json.loads(p.read_text()).get("batch", 1) for p in (tmp_path / "outbox").glob("*/*.json"))
    assert batches[-1] > 1, f"nothing ran in a batch: {batches}"
    starts = [c.finished_at - timedelta(seconds=c.seconds) for c in night.outputs]
    span = (max(c.finished_at for c in night.outputs) - min(starts)).total_seconds()
    metrics = parse_textfile((tmp_path / "spool" / "metrics" / "style_pipeline.prom").read_text())
    print("report", night.summary.cpu_seconds, "metrics", metrics["style_pipeline_job_seconds_sum"], "span", span)
    for figure in (night.summary.cpu_seconds, metrics["style_pipeline_job_seconds_sum"]):
        assert 0.5 * span < figure <= span * 1.1 + 0.5, f"{figure:.1f} s optimizing in a {span:.1f} s night"


def test_the_dated_page_shows_local_times_with_their_zone(tmp_path):
    """rev7d finding 6: the page is named by the local date (and the timer fires at a local hour) but showed UTC, so
    in California reports/2026-11-28.html said "Generated 2026-11-29 00:53 UTC" and each time was 8 h off the wall
    clock. Now its times are local, with the zone's name."""
    import os
    import shutil
    import subprocess
    import sys
    from zoneinfo import ZoneInfo

    from daemon_helpers import ROOT, make_config

    config = make_config(tmp_path)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TZ": "America/Los_Angeles"}
    for command in (["once"], ["report", "--since", "1h"]):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *command, "--config", str(config)], cwd=ROOT,
                              env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    page_path = next((tmp_path / "outbox" / "reports").glob("*.html"))
    page = page_path.read_text()
    generated = re.search(r"Generated (\S+) (\S+) (\w+),", page)
    assert generated and page_path.stem.startswith(generated.group(1) + "-") and generated.group(3) in ("PST", "PDT"), \
        f"{page_path.name}: {generated and generated.group(0)}"
    log = json.loads(next((tmp_path / "outbox").glob("*/*.json")).read_text())
    finished = datetime.fromisoformat(log["finished_at"]).astimezone(ZoneInfo("America/Los_Angeles"))
    assert f"{finished:%Y-%m-%d %H:%M %Z}" in page, "the card's finished time is not the wall clock's"


def test_a_photo_with_a_mistyped_exif_tag_keeps_its_card_upright(tmp_path):
    """The thumbnails turned photos with ImageOps.exif_transpose, which raises TypeError on a mistyped EXIF tag:
    the card was dropped for "<name>.error.json: unreadable (TypeError ...)" under Problems (rev9c)."""
    from test_images_metadata import mistyped_exif, two_tone

    photo = io.BytesIO()
    two_tone().save(photo, "JPEG", exif=mistyped_exif(6))
    _failure(tmp_path, "IMG_0001.jpg", "bad_sidecar", "recipe: no such recipe", "Fix IMG_0001.yaml",
             NOW - timedelta(hours=1), photo.getvalue())
    html = build_report(tmp_path / "outbox", tmp_path / "failed", since=timedelta(hours=12), now=NOW)
    assert "unreadable" not in html
    page = Page(html)
    assert page.all_text("file") == "IMG_0001.jpg"
    [thumb] = [src for cls, src in page.images if cls == "input"]
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as img:
        assert img.height > img.width, "turned upright: portrait"
