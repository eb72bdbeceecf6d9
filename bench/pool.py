"""The daemon on a queued batch (issue 13): photos per hour, busy share, and the gap between one photo's last
step and the next photo's first step, for the executor layouts side by side in one run.

Each row is one `style-pipeline once` over the same backlog (bench/daemon_run.run_backlog), with
`progress_seconds: 0` so that every step is a JSON log line with its slot:

- photos/hour = photos done / (last "job done" - first "claimed") x 3600;
- busy = sum of each output's optimizing_seconds (over n for a photo of a batch of n, which share that time) /
  (that span x slots): the share of the slots' time in the engine;
- gap = per slot, a photo's first step minus the last step of the photos before it (batch members, which
  overlap, have none): everything between two photos on one device; the same up to the START of that first step
  (its first progress line's setup_ms less its "first_step": the step's own two evaluations out, issue 13's
  under-50-ms gap; on CUDA the host's clock, see bench/daemon_log.first_step_gaps); the same up to its "job started",
  which leaves out the engine's own set-up of the next photo (its targets): the daemon's part; and from the first
  "output written" of the photo (or batch) before it to its "job started": how long landing holds the slot (the
  rest of a batch's writes, the next open), near zero or below once the writes run behind it.

    .venv/bin/python bench/pool.py                               # CPU: 24 photos at 64 px, 10 steps
    .venv/bin/python bench/pool.py --gpu --sizes 512,1024 --steps 100   # on a GPU (make bench-gpu runs it)
    .venv/bin/python bench/pool.py --only "1 slot batch 4" --before REF --rounds 2   # a commit beside this tree
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import events  # noqa: E402
from bench.daemon_run import run_backlog  # noqa: E402

LAYOUTS = {  # name: config overrides
    "1 slot": {},
    "1 slot + sheets": {"contact_sheet": True},
    "2 slots cpu+cpu": {"devices": ["cpu", "cpu"]},
    "1 slot batch 4": {"batch": 4},
}
GPU_LAYOUTS = {"every GPU batch auto": {}, "every GPU compile": {"defaults": {"compile": True}},
               "every GPU batch 1": {"batch": 1}, "sheets on": {"contact_sheet": True}}


def gaps(log_events: list[dict]) -> dict[str, list[float]]:
    """Per slot, for each photo after the first: seconds from the last step of the photos before it to its first
    step ("to step"), to its "job started" ("to start": the engine's wrap-up, encode, write, move, the next open
    and decode), from the previous photo's "job done" to its "job started" ("handover": the daemon alone), and
    from the first "output written" of the previous photo's batch (the photos that overlapped it) to its "job
    started" ("written to start")."""
    at = collections.defaultdict(dict)
    for e in log_events:
        if e.get("event") in ("job started", "job done", "output written") and "job_id" in e:
            at[e["event"]].setdefault(e["job_id"], e["t"])
    found: dict[str, list[float]] = {"to step": [], "to start": [], "handover": [], "written to start": []}
    for runs in steps_per_slot(log_events).values():
        for i in range(1, len(runs)):
            first, _, job = runs[i]
            before = max(r[1] for r in runs[:i])
            previous = max(runs[:i], key=lambda r: r[1])[2]
            if first <= before:
                continue  # a batch member: it ran beside the photos before it
            found["to step"].append(first - before)
            if job in at["job started"]:
                found["to start"].append(at["job started"][job] - before)
                if previous in at["job done"]:
                    found["handover"].append(at["job started"][job] - at["job done"][previous])
                start, end = next(r[:2] for r in runs[:i] if r[2] == previous)
                written = [at["output written"][r[2]] for r in runs[:i]
                           if r[0] <= end and r[1] >= start and r[2] in at["output written"]]
                if written:
                    found["written to start"].append(at["job started"][job] - min(written))
    return found


def steps_per_slot(log_events: list[dict]) -> dict[int, list[list]]:
    """Per slot, each photo's [first step, last step, job id], by first step."""
    spans: dict[tuple, list] = {}
    for e in log_events:
        if e.get("event") == "progress" and "job_id" in e:
            spans.setdefault((e.get("slot", 0), e["job_id"]), [e["t"], e["t"], e["job_id"]])[1] = e["t"]
    per_slot = collections.defaultdict(list)
    for (slot, _), span in spans.items():
        per_slot[slot].append(span)
    return {slot: sorted(runs) for slot, runs in per_slot.items()}


def opened_late(log_events: list[dict]) -> tuple[int, int]:
    """(late, counted): of the photos after a slot's first photo or batch, those whose pre-checks and decode were
    not done ahead ("pre-checks passed", "ahead": true) by the last step of the slot's photo or batch before
    theirs: the slot then opened them itself, or waited for the prefetch."""
    ahead = {e["job_id"]: e["t"] for e in log_events if e.get("event") == "pre-checks passed" and e.get("ahead")}
    late = counted = 0
    for runs in steps_per_slot(log_events).values():
        previous_end, end = None, None
        for first, last, job in runs:
            if end is not None and first > end:  # a new photo or batch: the ones before it have ended
                previous_end = end
            end = last if end is None else max(end, last)
            if previous_end is not None:
                counted += 1
                late += ahead.get(job, float("inf")) > previous_end
    return late, counted


def row(name: str, overrides: dict, size: int, args, out: Path, root: Path = ROOT) -> list[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(args.threads)}
    run = run_backlog(out / f"{name.replace(' ', '_').replace(',', '')}_{size}", args.photos, size, args.steps, env,
                      3600, overrides={"progress_seconds": 0, **overrides}, root=root, photos=args.photo_files)
    if not run.ok:
        return [name, f"{size}", f"failed (rc {run.returncode}; see {run.folder / 'daemon.log'})"] + [""] * 11
    records = [json.loads(p.read_text()) for p in run.outputs("*.json")]
    slots = len(overrides.get("devices", [])) or 1
    # a batch's photos share its time (each record holds the whole batch's): each counts its 1/n of it
    busy = sum(r.get("optimizing_seconds", 0.0) / r.get("batch", 1) for r in records) / (run.steady_s * slots)
    found = gaps(events(run.folder / "daemon.log"))
    ms = lambda found: f"{statistics.median(found) * 1000:.0f} / {max(found) * 1000:.0f}" if found else "-"  # noqa
    batched = sum(1 for r in records if r.get("batch", 1) > 1)
    late, counted = opened_late(events(run.folder / "daemon.log"))
    return [name, f"{size}", f"{len(run.dones)}", f"{3600 * len(run.dones) / run.steady_s:.0f}", f"{busy:.1%}",
            ms(found["to step"]), ms(step_starts(run.folder / "daemon.log")), ms(found["to start"]), ms(found["handover"]), ms(found["written to start"]),
            f"{batched}", f"{late} of {counted}", *set_up(run.folder / "daemon.log")]


def step_starts(log: Path) -> list[float]:
    """Per slot, seconds from the last step of the photos before each photo (or batch) to the START of its first
    step: the gap less the first step's own evaluations (setup_ms's first_step; bench/daemon_log.py reads it)."""
    from bench.daemon_log import first_step_gaps, read

    return first_step_gaps([job for job in read(log).values() if job.steps])[1]


def set_up(log: Path) -> list[str]:
    """The slot's opening ("job started"'s opened_ms) and the engine's set-up by part (the first progress line's
    setup_ms), medians in ms (bench/daemon_log.py reads them): what the gap between batches is made of."""
    from bench.daemon_log import read, setup_parts

    jobs = [job for job in read(log).values() if job.started is not None]
    opened = [job.opened_ms for job in jobs if job.opened_ms is not None]
    return [f"{statistics.median(opened):.1f}" if opened else "-", setup_parts([j for j in jobs if j.steps]) or "-"]


def issue_photo_file(out: Path) -> list[Path]:
    """Issue 13's photo as a JPEG (quality 92) under ``out``, made once a run: what the pool drops in turn."""
    from bench.common import issue_photo
    from pipeline.engine import images

    out.mkdir(parents=True, exist_ok=True)
    path = out / "issue-2400x1655.jpg"
    path.write_bytes(images.encode(issue_photo(), "jpeg", 92))
    return [path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="default: 512,1024 where CUDA is, else 64")
    parser.add_argument("--steps", type=int, default=None, help="default: 100 where CUDA is, else 10")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the daemon")
    parser.add_argument("--only", default=None, help="comma-separated layout names")
    parser.add_argument("--gpu", action="store_true", help="the GPU layouts even without CUDA (a dry run's check)")
    parser.add_argument("--out", type=lambda v: Path(v).resolve(), default=ROOT / "bench" / "out" / "pool")
    parser.add_argument("--before", default=None, metavar="REF",
                        help="also run the commit REF (git archive, as bench/gap.py), each row beside this tree's")
    parser.add_argument("--rounds", type=int, default=1, help="with --before: rounds alternating the two")
    parser.add_argument("--photo", choices=("samples", "issue"), default="samples",
                        help="samples: the three 512 px samples in turn (1024x1024 and 1024x683 at 1024 px); issue: "
                             "issue 13's 2400x1655 photo (1024x706 at 1024 px: one shape, as the issue measured)")
    parser.add_argument("--last", default=None, metavar="LAYOUT@SIZE",
                        help="run this row last: the one a run cut short (a lent GPU's budget) can best lose")
    args = parser.parse_args()
    args.photo_files = issue_photo_file(args.out) if args.photo == "issue" else None
    import torch

    gpu = torch.cuda.is_available()
    layouts = GPU_LAYOUTS if gpu or args.gpu else LAYOUTS
    args.sizes, args.steps = args.sizes or ([512, 1024] if gpu else [64]), args.steps or (100 if gpu else 10)
    if args.only:
        layouts = {k: v for k, v in layouts.items() if k in args.only.split(",")}
    where = torch.cuda.get_device_name(0) + f" x{torch.cuda.device_count()}" if gpu else "CPU"
    photos = "of 2400x1655 (issue 13's)" if args.photo == "issue" else "(the three 512 px samples in turn)"
    print(f"# bench/pool.py on {where}: {args.photos} photos {photos} at {args.sizes} px, {args.steps} steps; "
          f"{os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={args.threads}; load average {os.getloadavg()[0]:.1f}\n")
    head = ["layout", "size", "photos", "photos/hour", "busy", "last step to next first step, ms median / max",
            "last step to next first step's start (its evaluations out), ms median / max",
            "last step to next job started, ms", "job done to next job started, ms",
            "first output written to next job started, ms", "photos run in a batch",
            "photos not prepared ahead by the slot's previous last step", "slot's opening, ms (median)",
            "job started to first step by part, ms (medians)"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    rows = [(name, size) for size in args.sizes for name in layouts]
    rows.sort(key=lambda r: f"{r[0]}@{r[1]}" == args.last)  # stable: the others keep their order
    trees = {"": ROOT}
    if args.before:
        from bench.common import extract

        trees = {f", before ({args.before})": extract(args.before, args.out), ", after (this tree)": ROOT}
    for round_ in range(args.rounds if args.before else 1):
        for name, size in rows:
            for tag, root in trees.items():
                label = name + tag + (f", round {round_ + 1}" if args.before else "")
                print("| " + " | ".join(row(label, layouts[name], size, args, args.out, root)) + " |", flush=True)


if __name__ == "__main__":
    main()
