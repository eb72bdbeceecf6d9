"""The morning report over a busy night: HTML size and time for `style-pipeline report`'s two pages (dated and
latest) over N fake 1024 px outputs (rev6e's probe_report_size.py, made a bench). Prints one table row per
code version given, so before/after are measured side by side in one run:

  git archive <before> pipeline | tar -x -C /tmp/before
  timeout 900 .venv/bin/python bench/bench_report_size.py 300 --reps 2 --code /tmp/before --code .

`--code DIR` runs the report code found in DIR (its pipeline/), each in its own subprocess.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_night(tmp: Path, count: int, images: bool = True) -> None:
    from PIL import Image

    out, failed, done = tmp / "outbox" / "starry", tmp / "spool" / "failed", tmp / "spool" / "done"
    for folder in (out, failed, done, tmp / "outbox" / "reports"):
        folder.mkdir(parents=True)
    # 2,373 photos/h (README, the H200 pool at 1024 px): one every 1.5 s, so 21,000 fill a 9 h night
    photo = Image.open(ROOT / "pipeline/assets/samples/coffee.jpg").convert("RGB").resize((1024, 683))
    now = datetime.now(timezone.utc)
    for i in range(count if images else 0):
        photo.save(out / f"p{i}.png")
        photo.save(done / f"p{i}.jpg", quality=90)
    painting = ROOT / "pipeline/assets/styles/starry_night.jpg"
    for i in range(count):  # the hashes the daemon records: a card checks its pictures against them (rev8c)
        kept = done / f"p{i}.jpg"
        log = {"input": {"name": kept.name, "sha256": _sha256(kept) if kept.exists() else None},
               "output": {"name": f"p{i}.png"}, "recipe": "starry",
               "styles": [{"name": painting.name, "path": str(painting), "sha256": _sha256(painting)}],
               "steps": 300, "finished_at": (now - timedelta(seconds=1.5 * i)).isoformat(), "timings": {"total": 1.5},
               "curve": [{"step": s, "loss": 1e6 / (s + 1)} for s in range(0, 300, 10)], "device": "cuda"}
        (out / f"p{i}.json").write_text(json.dumps(log))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def two_pages(tmp: Path) -> dict:
    """What cmd_report does: the dated page and report.html. Old code: write_report per page."""
    from pipeline import report

    pages = [tmp / "outbox" / "reports" / "d.html", tmp / "outbox" / "report.html"]
    args = (tmp / "outbox", tmp / "spool" / "failed", timedelta(hours=12))
    start = time.perf_counter()
    if hasattr(report, "write_reports"):
        report.write_reports(pages, *args, done=tmp / "spool" / "done")
    else:
        for page in pages:
            report.write_report(page, *args, done=tmp / "spool" / "done")
    return {"seconds": time.perf_counter() - start, "bytes": pages[1].stat().st_size, "code": report.__file__,
            "cards": pages[1].read_text().count('<article class="card output"')}


def child(night: Path, reps: int) -> None:
    print(json.dumps([two_pages(night) for _ in range(reps)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int, nargs="?", default=300)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--code", action="append", default=[], help="a checkout whose pipeline/ to measure")
    parser.add_argument("--logs-only", action="store_true", help="no pictures: the cost of reading the logs alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child), args.reps)
    what = "logs only (no pictures)" if args.logs_only else "outputs of 1024 px"
    print(f"{args.count} {what}, two pages (dated + report.html), median of {args.reps}")
    print(f"{'code':<28} {'cards':>6} {'MB/page':>8} {'s (2 pages)':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        make_night(Path(tmp), args.count, images=not args.logs_only)
        for code in args.code or [str(ROOT)]:
            env = {"PYTHONPATH": str(Path(code).resolve()), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
            res = subprocess.run([sys.executable, __file__, "--child", tmp, "--reps", str(args.reps)], env=env,
                                 capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{code}: {res.stderr[-2000:]}")
            rows = json.loads(res.stdout.strip().splitlines()[-1])
            assert rows[0]["code"].startswith(str(Path(code).resolve())), rows[0]["code"]  # that code, not another
            print(f"{code:<28} {rows[0]['cards']:>6} {rows[0]['bytes'] / 1e6:>8.2f} "
                  f"{statistics.median(r['seconds'] for r in rows):>12.2f}")


if __name__ == "__main__":
    main()
