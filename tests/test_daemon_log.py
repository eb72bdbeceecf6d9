"""bench/daemon_log.py on a synthetic log whose answers are worked out by hand."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from bench import daemon_log

BASE = datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)


def _line(event: str, at: float, job: str | None, **extra) -> str:
    stamp = (BASE + timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": event, "timestamp": stamp, **({"job_id": job} if job else {}), **extra})


def _log(tmp_path):
    """Job a: starts at 0, 10 steps 10 ms apart from 0.1 s, with a 0.5 s stall before step 6 (a checkpoint),
    done at 0.8 s; job b: starts at 1.0 s, 10 steps from 1.05 s, done at 1.2 s."""
    lines = ["not json", _line("engine ready", 0.0, None), _line("job started", 0.0, "a")]
    lines += [_line("progress", 0.1 + 0.01 * (k - 1) + (0.5 if k >= 6 else 0), "a", step=k) for k in range(1, 11)]
    lines += [_line("job done", 0.8, "a"), _line("job started", 1.0, "b")]
    lines += [_line("progress", 1.05 + 0.01 * (k - 1), "b", step=k) for k in range(1, 11)]
    lines += [_line("job done", 1.2, "b")]
    path = tmp_path / "daemon.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_table_reads_the_stall_the_gaps_and_the_rates(tmp_path, capsys):
    row = dict(zip(daemon_log.HEADERS, daemon_log.summary(daemon_log.read(_log(tmp_path)))))
    assert row["photos"] == 2 and row["photos/hour (span)"] == 6000  # 2 photos in 1.2 s
    assert row["a photo every, s (median)"] == pytest.approx(1.0)
    assert row["job started -> first step, ms"] == pytest.approx(75.0)  # 100 and 50 ms
    assert row["first -> last step, s (median)"] == pytest.approx(0.34)  # 0.59 and 0.09 s
    assert row["median step, ms"] == pytest.approx(10.0)
    assert row["stalls per photo"] == 0.5 and row["stall s per photo"] == pytest.approx(0.255)
    assert row["last step -> next job started, s"] == pytest.approx(0.31)
    assert row["last step -> next first step, ms (median)"] == pytest.approx(360.0)  # 0.69 s -> 1.05 s
    assert row["last step -> next first step's start (its evaluations out), ms (median)"] is None  # no setup_ms
    assert row["span in steps (stalls out)"] == "14.2%"  # 0.17 s of steps in 1.2 s
    daemon_log.main([str(tmp_path / "daemon.log")])
    out = capsys.readouterr().out
    assert "| stalls per photo | 0.5 |" in out


def test_photos_started_together_share_the_gap_to_the_next_start():
    assert daemon_log.photo_every([0.0, 0.001, 0.002, 3.0, 3.001, 6.0]) == pytest.approx(1.25)  # 3/3 and 3/2


def test_the_slots_opening_and_the_set_up_by_part_are_read_from_their_fields(tmp_path):
    """"job started"'s opened_ms and the first progress line's setup_ms (issue 13): their medians, by part."""
    lines = [_line("job started", 0.0, "a", opened_ms=10.0), _line("job started", 1.0, "b", opened_ms=30.0)]
    lines += [_line("progress", 0.2, "a", step=1, setup_ms={"copy": 1.0, "content": 4.0, "first_step": 20.0}),
              _line("progress", 0.3, "a", step=2), _line("job done", 0.5, "a"),
              _line("progress", 1.2, "b", step=1, setup_ms={"copy": 3.0, "content": 6.0, "first_step": 40.0}),
              _line("progress", 1.3, "b", step=2), _line("job done", 1.5, "b")]
    path = tmp_path / "daemon.log"
    path.write_text("\n".join(lines) + "\n")
    row = dict(zip(daemon_log.HEADERS, daemon_log.summary(daemon_log.read(path))))
    assert row["taken -> job started in the slot, ms (median)"] == pytest.approx(20.0)
    assert row["job started -> first step by part, ms (median)"] == "copy 2.0, content 5.0, first_step 30.0"


def test_the_gap_to_the_next_first_step_and_to_its_start_per_slot_with_batches(tmp_path):
    """Slot 0 runs a and b as one batch (their steps overlap) then c; slot 1 runs d then e. The gaps are c's and
    e's: from the last step before them to their first step (199 and 150 ms), and to that step's start, their
    setup_ms's first_step (50 and 20 ms: the step's own evaluations) out: 149 and 130 ms."""
    first = {"a": (0.100, 30.0), "b": (0.101, 30.0), "c": (0.5, 50.0), "d": (0.0, 5.0), "e": (0.35, 20.0)}
    last = {"a": 0.3, "b": 0.301, "c": 0.6, "d": 0.2, "e": 0.45}
    slot = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1}
    lines = []
    for job, (at, first_step) in first.items():
        lines += [_line("job started", at - 0.05, job, slot=slot[job]),
                  _line("progress", at, job, step=1, slot=slot[job], setup_ms={"copy": 1.0, "first_step": first_step}),
                  _line("progress", last[job], job, step=2, slot=slot[job]), _line("job done", last[job] + 0.01, job)]
    path = tmp_path / "daemon.log"
    path.write_text("\n".join(lines) + "\n")
    jobs = list(daemon_log.read(path).values())
    to_step, to_start = daemon_log.first_step_gaps(jobs)
    assert sorted(to_step) == pytest.approx([0.150, 0.199]) and sorted(to_start) == pytest.approx([0.130, 0.149])
    row = dict(zip(daemon_log.HEADERS, daemon_log.summary(daemon_log.read(path))))
    assert row["last step -> next first step, ms (median)"] == pytest.approx(174.5)
    assert row["last step -> next first step's start (its evaluations out), ms (median)"] == pytest.approx(139.5)


def test_a_real_daemons_log_gives_both_gaps_and_the_pool_bench_agrees(tmp_path):
    """A tiny `once` run (4 photos in batches of 2, one slot, every step logged): its log has the slot and the
    first step's setup_ms that the gaps need; the gap to the next batch's first step is bench/pool.py's "to step",
    and the gap to its start is that less the batch's first_step."""
    import os

    from bench.common import events
    from bench.daemon_run import run_backlog
    from bench.pool import gaps

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = run_backlog(tmp_path / "run", 4, 32, 3, env, 300, overrides={"progress_seconds": 0, "batch": 2})
    assert run.ok, (run.folder / "daemon.log").read_text()[-3000:]
    jobs = [job for job in daemon_log.read(run.folder / "daemon.log").values() if job.steps]
    to_step, to_start = daemon_log.first_step_gaps(jobs)
    assert len(jobs) == 4 and to_step and len(to_start) == len(to_step)
    assert sorted(to_step) == pytest.approx(sorted(gaps(events(run.folder / "daemon.log"))["to step"]))
    assert 1 <= len(to_step) <= 3 and all(0 < start < step for start, step in zip(to_start, to_step))
    evaluations = {round(j.setup_ms["first_step"], 1) for j in jobs}  # each batch's first step, ms
    assert {round(1000 * (step - start), 1) for step, start in zip(to_step, to_start)} <= evaluations
