"""The benchmarks' own instruments, on the real engine: the frame recorder (a public listener) and the early-stop
replay that bench/choose.py runs on recorded curves must agree with what the engine itself does."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pipeline.engine import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.choose import simulate_early_stop  # noqa: E402
from bench.recorder import Recorder, run_engine  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_threads")


def test_the_recorder_keeps_8_bit_frames_and_per_iteration_costs(engine, content, style):
    rec = Recorder(every=2)
    result = run_engine(engine, content, style, Settings(size=32, steps=6, early_stop_tol=0), rec)
    assert [f.step for f in rec.frames] == list(range(1, 7))
    kept = [f for f in rec.frames if f.pixels is not None]
    assert [f.step for f in kept] == [2, 4, 6] and all(f.pixels.dtype == torch.uint8 for f in kept)
    assert kept[-1].pixels.shape[-2:] == torch.Size(result.scales[-1])
    its = rec.iterations()
    assert len(its) == 3 and all(it.evals >= 1 and it.per_eval > 0 and it.own < it.wall for it in its)
    assert rec.evals >= result.steps


def test_the_replayed_early_stop_stops_where_the_engine_stopped(engine, content, style):
    tol, window = 0.05, 3
    rec = Recorder(every=10 ** 9)
    result = run_engine(engine, content, style, Settings(size=32, steps=40, optimizer="adam", log_every=1,
                                                         early_stop_tol=tol, early_stop_window=window), rec)
    assert result.stop_reason == "early_stop"
    assert simulate_early_stop([(f.step, f.raw) for f in rec.frames], tol, window) == result.steps
