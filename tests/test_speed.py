"""Issue 13: the speed-only settings, cudnn_benchmark and compile (engine/speed.py), on the CPU with real weights.

cuDNN's flag is set for CUDA runs only (a torch.device("cuda") stands in for the GPU: prepare() reads its type);
compile is a no-op off the GPU, and where it is let run (on the CPU, with torch's cheap aot_eager backend, which
traces the same graphs) it gives the eager run's result and reuses its graph; neither is part of a checkpoint's
identity (tests/test_checkpoints.py: a checkpoint resumes after they changed).
"""
from __future__ import annotations

import pytest
import torch

from daemon_helpers import make_config
from pipeline.daemon import config as config_module
from pipeline.engine import Settings, speed
from pipeline.errors import SettingsError

TINY = Settings(size=32, steps=3, early_stop_tol=0, scales=1)


@pytest.fixture
def cudnn_flag():
    """The process-wide flag, put back after the test."""
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


def test_the_config_takes_the_speed_settings_and_names_a_bad_one(tmp_path):
    path = make_config(tmp_path, defaults={"compile": True},
                       recipes={"starry": {"styles": ["starry_night.jpg"], "cudnn_benchmark": True},
                                "scream": {"styles": ["the_scream.jpg"]}})
    config = config_module.load(path)
    assert (config.recipes["starry"].settings.compile, config.recipes["starry"].settings.cudnn_benchmark) == (True,
                                                                                                            True)
    assert (config.recipes["scream"].settings.compile, config.recipes["scream"].settings.cudnn_benchmark) == (True,
                                                                                                            False)
    assert (Settings().compile, Settings().cudnn_benchmark) == (False, False)  # both measured costly on an H200
    for key in ("compile", "cudnn_benchmark"):
        bad = make_config(tmp_path / key, defaults={key: "yes"})
        with pytest.raises(config_module.ConfigError, match=rf"config\.yaml:\d+: defaults\.{key}: must be true or "
                                                            r"false \(got 'yes'\)"):
            config_module.load(bad)
        with pytest.raises(SettingsError, match=key):
            Settings(**{key: 1}).validate()


def test_cudnn_benchmark_is_set_for_cuda_runs_only(engine, content, style, cudnn_flag, torch_threads):
    cuda = torch.device("cuda")  # a stand-in: prepare() only reads the type, no GPU is touched
    assert speed.prepare(cuda, True, False)["cudnn_benchmark"] == "on" and torch.backends.cudnn.benchmark is True
    assert speed.prepare(cuda, False, False)["cudnn_benchmark"] == "off" and torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = False
    result = engine.stylize(content, [style], TINY.replace(cudnn_benchmark=True))
    assert torch.backends.cudnn.benchmark is False, "a CPU run leaves the process-wide flag alone"
    assert result.speed == {"cudnn_benchmark": "no-op on cpu (CUDA only)", "compile": "off"}


def test_compile_off_the_gpu_is_a_noop_with_the_same_result(engine, content, style, monkeypatch, torch_threads):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile was called for a CPU run")

    monkeypatch.setattr(torch, "compile", refuse)
    plain = engine.stylize(content, [style], TINY)
    asked = engine.stylize(content, [style], TINY.replace(compile=True))
    assert asked.speed["compile"] == "no-op on cpu (CUDA only)" and plain.speed["compile"] == "off"
    assert asked.losses == plain.losses
    assert asked.image.tobytes() == plain.image.tobytes()
    assert engine.compiled is None


def test_the_compiled_network_gives_the_eager_result_and_reuses_its_graph(engine, content, style, monkeypatch,
                                                                         torch_threads):
    """Let compile run on the CPU with aot_eager (inductor took 476 s here): the same graphs dynamo would hand to
    inductor on a GPU, so the compiled path itself is exercised before a GPU ever runs it."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(speed, "COMPILE_DEVICES", ("cpu",))
    monkeypatch.setattr(speed, "BACKEND", "aot_eager")
    monkeypatch.setattr(engine, "compiled", None)
    eager = engine.stylize(content, [style], TINY)
    first = engine.stylize(content, [style], TINY.replace(compile=True))
    made = engine.compiled
    graphs = counters["stats"]["unique_graphs"]
    again = engine.stylize(content, [style], TINY.replace(compile=True))
    assert first.speed["compile"] == "on" and made is not None and made.eager is engine.vgg
    assert engine.compiled is made and counters["stats"]["unique_graphs"] == graphs, "the same shape: no new graph"
    assert graphs >= 1, "the run went through dynamo"
    for run in (first, again):
        assert run.losses["total"] == pytest.approx(eager.losses["total"], rel=1e-4)


def test_the_bench_table_keeps_a_failed_compile_and_a_child_cut_short():
    """bench/conv_speed.py runs on a GPU once a session: a compile that failed says why in its cells, and a row the
    on child never reached (stopped at --budget) is kept with its off figures and "-" for the rest."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.conv_speed import HEAD, rows_of

    off = [{"label": "daemon", "hw": [706, 1024], "batch": b, "first_s": 0.5, "loss_s": 0.0132, "step_s": 0.0143}
           for b in (1, 6)]
    on = [{**off[0], "first_s": 0.9, "loss_s": 0.0110, "step_s": 0.0121,
           "compile_error": "BackendCompilerFailed: no C compiler"}]
    first, cut = (dict(zip(HEAD, row)) for row in rows_of(off, on))
    assert first["shape"] == "1024x706 (daemon)" and first["loss on"] == "11.0 (0.83x)"
    assert first["loss compiled"] == first["step compiled"] == "BackendCompilerFailed: no C compiler"
    assert first["new shape's first call s off / on"] == "0.50 / 0.90"
    assert (cut["batch"], cut["loss ms/img off"], cut["loss on"], cut["step on"]) == ("6", "13.2", "-", "-")
