"""The benchmarks are the figures' source and the GPU session runs them unattended, once: a bench that reads an engine
or daemon attribute after it moved dies on its first row there (checkpoint_cost and batch_tidy did, 129c5f4). So
every bench module is imported here, and the cheapest row of each bench that reaches into internals (private
names, a run's parts, the daemon's loop) is run at 32-48 px: the rot shows here first, not on the lent GPU.
bench/device_run.py's stages have their own CPU dry run (`make device-dry`); checkpoint_cost's row is in
test_bench.py."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))
pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")


def test_batch_tidy_prepares_a_run_and_takes_from_the_queue(monkeypatch):
    from bench import batch_tidy

    monkeypatch.setattr(batch_tidy, "PHOTO", (240, 165))
    monkeypatch.setattr(batch_tidy, "QUEUED", 2)
    rows = batch_tidy.preparation_rows(repeats=1)
    assert [row[0] for row in rows] == ["240x165 at 512 px", "240x165 at 1024 px"]
    assert all(t > 0 for row in rows for t in row[1:])
    [(what, old, opened, new, none_opened, enqueue, ratio)] = batch_tidy.queue_rows(repeats=1)
    assert opened == 2 and none_opened == 0 and old > 0 and new > 0


def test_setup_parts_makes_a_batchs_targets_and_runs(capsys):
    from bench import setup_parts

    setup_parts.targets(2, [32], 1)
    setup_parts.runs_made(1, 1)
    out = capsys.readouterr().out
    assert "| 32 | 32x21 |" in out and "| 1 |" in out


def test_gap_times_the_engines_phases():
    from bench.gap import ENGINE_PHASES, engine_phases

    found = engine_phases(2, 32, 1)
    assert set(found) == set(ENGINE_PHASES) and all(len(v) == 1 and v[0] >= 0 for v in found.values())


def test_tiles_cache_recuts_the_plan_as_the_engine_cuts_it():
    from bench.tiles_cache import Recut
    from pipeline.engine.tiles import TilePlan

    plan = TilePlan((64, 288), 96, 80)
    assert Recut((64, 288), 96, 80).tiles() == plan.tiles() and plan.count == 3


def test_backlog_loop_times_the_daemons_loop_parts(tmp_path):
    from bench.backlog_loop import measure

    found = measure(ROOT, tmp_path / "folder", 3, 1, raws=7)
    assert set(found) == {"ready", "rescan", "1,000 events", "unpaired", "status facts", "status.json kB"}


def test_choose_splits_a_curve_at_the_level_the_engine_ran_last(engine, content, style):
    """scales=2 at 48 px runs one level (the 24 px one is under shapes.MIN_SIDE): the curve split at the recipe's
    count had no final-scale frames, and the smoke run's early-stop replay said every run stopped at step 0."""
    from bench.choose import Curve
    from bench.recorder import Recorder, run_engine
    from pipeline.engine import Settings

    rec = Recorder(every=1)
    result = run_engine(engine, content, style, Settings(size=48, steps=3, scales=2, coarse_steps=2,
                                                         early_stop_tol=0), rec)
    assert len(result.scales) == 1
    curve = Curve(rec)
    assert [step for step, _ in curve.fine_raw] == [1, 2, 3] and curve.coarse == []
    points = [{"step": f.step, "t": f.elapsed, "loss": f.raw, "evals": f.evals, "style_ratio": 1.0}
              for f in rec.frames]
    assert curve.stop(1e-3, points, 2)["step"] == 3


@pytest.mark.parametrize("kind", ["own", "mac"])
def test_sidecars_scan_times_the_unpaired_check_in_a_tree(tmp_path, kind):
    from bench.sidecars_scan import make_folder, timed

    make_folder(tmp_path / kind, kind, 5)
    got = timed(ROOT, tmp_path / kind, 1)
    assert got["unpaired"] == 1 and got["seconds"] >= 0
