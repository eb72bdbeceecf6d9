"""Where a daemon's time went, read from its JSON log alone: one markdown table per daemon.log.

Why from the log: a GPU is lent for minutes, and its daemon logs are what comes back. The log has each job's
"job started", a "progress" line per step (step number, ISO timestamp) and "job done"; from those this prints how
often a photo came out, how long its steps took, the stalls inside a job (a step gap over 5x the log's median step:
on the H200 these were the checkpoints), the time between one job's last step and the next job's start, and the
same to the next first step and to that step's start (its own evaluations out: issue 13's gap); and, in
logs from the gap work on (issue 13), the slot's opening of a job or batch ("job started"'s opened_ms) and the
engine's set-up by part (the first "progress" line's setup_ms).

    .venv/bin/python bench/daemon_log.py daemon.log [more.log ...] [--together]

--together: one table, a row per log, instead of a table per log.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import events, median, table  # noqa: E402

STALL = 5.0  # a step gap (per step) over this many times the log's median step is a stall

HEADERS = ["photos", "a photo every, s (median)", "photos/hour (span)", "job started -> first step, ms",
           "first -> last step, s (median)", "median step, ms", "stalls per photo", "stall s per photo",
           "last step -> next job started, s", "last step -> next first step, ms (median)",
           "last step -> next first step's start (its evaluations out), ms (median)", "span in steps (stalls out)",
           "taken -> job started in the slot, ms (median)", "job started -> first step by part, ms (median)"]


@dataclass
class Job:
    started: float | None = None
    done: float | None = None
    steps: list[tuple[int, float]] = field(default_factory=list)  # (step number, time)
    opened_ms: float | None = None  # "job started"'s opened_ms: the slot's open and gather (logs from issue 13 on)
    setup_ms: dict | None = None  # the first "progress"'s setup_ms: the engine's set-up by part
    slot: int = 0  # the executor slot its progress lines name (bench/pool.py's layouts: one per device)


def read(path: Path) -> dict[str, Job]:
    """The log's jobs by id, in the order they first appear (common.events: lines that are not JSON skipped)."""
    jobs: dict[str, Job] = {}
    for event in events(path):
        if event.get("job_id"):
            _note(jobs.setdefault(event["job_id"], Job()), event)
    return jobs


def _note(job: Job, event: dict) -> None:
    at = event["t"]
    if event.get("event") == "job started" and job.started is None:
        job.started, job.opened_ms = at, event.get("opened_ms")
    elif event.get("event") == "job done":
        job.done = at
    elif event.get("event") == "progress" and isinstance(event.get("step"), int):
        job.steps.append((event["step"], at))
        job.slot = event.get("slot", job.slot)
        job.setup_ms = job.setup_ms or event.get("setup_ms")


def step_gaps(job: Job) -> list[tuple[float, float, float]]:
    """(seconds per step, start, end) of each gap between the job's consecutive progress lines."""
    pairs = zip(job.steps, job.steps[1:])
    return [((t1 - t0) / (s1 - s0), t0, t1) for (s0, t0), (s1, t1) in pairs if s1 > s0]


def union(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the intervals (a batch's jobs step at the same time: counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def photo_every(starts: list[float], together: float = 0.05) -> float | None:
    """Median seconds a photo between starts; photos started together (a batch) share the gap to the next."""
    launches: list[list[float]] = []
    for at in sorted(starts):
        if launches and at - launches[-1][-1] <= together:
            launches[-1].append(at)
        else:
            launches.append([at])
    return median([(b[0] - a[0]) / len(a) for a, b in zip(launches, launches[1:])])


def next_start_gaps(jobs: list[Job]) -> list[float]:
    """For each job with steps, the seconds from its last step to the first job started after it."""
    starts = sorted(j.started for j in jobs if j.started is not None)
    gaps = []
    for job in jobs:
        later = [s for s in starts if job.steps and s > job.steps[-1][1]]
        if later:
            gaps.append(later[0] - job.steps[-1][1])
    return gaps


def first_step_gaps(jobs: list[Job]) -> tuple[list[float], list[float]]:
    """Per slot, for each photo or batch after the slot's first: the seconds from the last step of the photos
    before it to its first step, and to the START of that first step (its first progress line less setup_ms's
    ``first_step``: the step's own evaluations, the start pixels' and the first trial point's, left out; logs from
    issue 13's set-up split on, else no second figure). A batch's photos overlap: its earliest first step counts,
    as bench/pool.py's gaps. On CUDA the start is the host's clock: network work of the set-up still queued then
    (the content targets) is waited for inside ``first_step``, so the second figure is the gap less the device's
    share of the first step; the first figure is the gap a photo sees."""
    by_slot: dict[int, list[Job]] = {}
    for job in jobs:
        if job.steps:
            by_slot.setdefault(job.slot, []).append(job)
    to_step: list[float] = []
    to_start: list[float] = []
    for runs in by_slot.values():
        before = None
        for job in sorted(runs, key=lambda j: j.steps[0][1]):
            first = job.steps[0][1]
            if before is not None and first > before:
                to_step.append(first - before)
                if "first_step" in (job.setup_ms or {}):
                    to_start.append(first - job.setup_ms["first_step"] / 1000 - before)
            before = job.steps[-1][1] if before is None else max(before, job.steps[-1][1])
    return to_step, to_start


def ms(seconds: list[float]) -> float | None:
    """The median in ms, None for no values."""
    found = median(seconds)
    return None if found is None else found * 1000


def summary(jobs: dict[str, Job]) -> list:
    """The row of HEADERS for one log (its finished jobs)."""
    done = [j for j in jobs.values() if j.done is not None and j.started is not None]
    stepped = [j for j in done if j.steps]
    if not stepped:
        return [len(done)] + [None] * (len(HEADERS) - 1)
    n, span = len(done), max(j.done for j in done) - min(j.started for j in done)
    gaps = [g for j in stepped for g in step_gaps(j)]
    per_step = median([p for p, _, _ in gaps]) or 0.0
    stalls = [b - a for p, a, b in gaps if p > STALL * per_step]
    stepping = union([(a, b) for p, a, b in gaps if p <= STALL * per_step])
    return [n, photo_every([j.started for j in done]), round(n * 3600 / span) if span else None,
            median([j.steps[0][1] - j.started for j in stepped]) * 1000,
            median([j.steps[-1][1] - j.steps[0][1] for j in stepped]), per_step * 1000, len(stalls) / n,
            sum(stalls) / n, median(next_start_gaps(stepped)), *map(ms, first_step_gaps(stepped)),
            f"{stepping / span:.1%}" if span else None,
            median([j.opened_ms for j in done if j.opened_ms is not None]), setup_parts(stepped)]


def setup_parts(jobs: list[Job]) -> str | None:
    """Each set-up part's median over the jobs that logged one (a batch's photos log the batch's), "name ms"."""
    found: dict[str, list[float]] = {}
    for job in jobs:
        for name, ms in (job.setup_ms or {}).items():
            found.setdefault(name, []).append(ms)
    return ", ".join(f"{name} {median(v):.1f}" for name, v in found.items()) or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--together", action="store_true", help="one table, a row per log")
    args = parser.parse_args(argv)
    rows = [summary(read(path)) for path in args.logs]
    if args.together:
        print(table(["log", *HEADERS], [[str(p), *row] for p, row in zip(args.logs, rows)]))
        return
    for path, row in zip(args.logs, rows):
        print(f"\n{path}\n")
        print(table(["measure", "value"], [[h, v] for h, v in zip(HEADERS, row)]))


if __name__ == "__main__":
    main()
