"""One memory model (engine/memory.py) for the tile planner and the GPU batch size, and the seams measure of
bench/print.py read at the plan's own tile borders, in both axes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.print import seams, seams_at
from pipeline.engine import Settings, batch
from pipeline.engine.memory import photo_bytes, plan
from pipeline.engine.tiles import TilePlan

GIB = 2 ** 30
PLAN = dict(halo=80, optimizer="lbfgs", history=20, precision="fp32")


def test_the_model_is_calibrated_on_the_gpus_measured_peaks():
    # shared/notes/gpu.md: H200, tf32, the default recipe (20 L-BFGS pairs), a 960x662 photo at 512/1024/2048 px
    for hw, measured in (((353, 512), 0.65), ((706, 1024), 2.25), ((1412, 2048), 8.68)):
        # 0.954 / 1.10 / 1.14x today; 0.9 below: at 512 px the fixed ~50 MB of weights is outside the per-pixel
        # model, so the smallest size sits just under 1 and a 0.95 floor would fail on a constant's rounding
        assert 0.9 <= photo_bytes(hw) / (measured * GIB) <= 1.2, hw


def test_the_batch_size_and_the_tile_plan_read_one_model(monkeypatch):
    hw = (706, 1024)
    one = photo_bytes(hw)
    assert plan(hw, one, **PLAN) is None and plan(hw, one - 1, **PLAN) is not None  # one photo: the threshold
    monkeypatch.setattr(batch, "cuda_free", lambda device: int(5 * one / 0.8) + 8)  # 80% of it holds 5 photos
    assert batch.batch_size_for(torch.device("cuda"), hw) == 5
    assert batch.batch_size_for(torch.device("cuda"), (1412, 2048)) == 1


def test_the_batch_size_reads_the_batchs_own_settings(monkeypatch):
    """A shorter L-BFGS memory, Adam or bf16 costs less per photo: more of them fit (the defaults were assumed)."""
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", "off")  # auto: CUDA's default (tf32), whatever is recorded here
    hw, gpu = (706, 1024), torch.device("cuda")
    monkeypatch.setattr(batch, "cuda_free", lambda device: int(10 * photo_bytes(hw) / 0.8) + 8)
    assert batch.batch_size_for(gpu, hw, Settings()) == 10
    for cheaper in (Settings(lbfgs_history=5), Settings(optimizer="adam"), Settings(precision="bf16")):
        fits = int(10 * photo_bytes(hw) / (photo_bytes(hw, cheaper.optimizer, cheaper.lbfgs_history,
                                                       cheaper.precision)))
        assert batch.batch_size_for(gpu, hw, cheaper) == fits > 10, cheaper


def test_plan_borders_are_where_cores_start_and_a_merged_sliver_has_none():
    assert TilePlan((100, 250), 48, 80).borders() == ([48], [48, 96, 144, 192])  # 250 - 240 < 16: no core at 240
    rows, cols = TilePlan((100, 250), 48, 80).borders()
    cut = TilePlan((100, 250), 48, 80).tiles()
    assert sorted({t.core_rows[0] for t in cut} - {0}) == rows and sorted({t.core_cols[0] for t in cut} - {0}) == cols


@pytest.fixture(scope="module")
def photo(content) -> np.ndarray:
    """The astronaut squeezed to 250x100: its horizontal steps are half its vertical ones (0.55x)."""
    return np.asarray(content.resize((250, 100)), dtype=np.float64)


def test_borders_that_are_no_seams_read_one_in_either_axis(photo):
    # every column (or row) border of the photo itself: each compared with the steps in its own direction
    assert seams_at(photo, list(range(1, 250)), []) == pytest.approx(1.0)
    assert seams_at(photo, [], list(range(1, 100))) == pytest.approx(1.0)
    assert seams_at(photo, list(range(1, 250)), list(range(1, 100))) == pytest.approx(1.0, abs=0.01)


def test_a_seam_in_either_axis_reads_above_the_target(photo):
    row_seam, col_seam = photo.copy(), photo.copy()
    row_seam[48:, :] = np.clip(row_seam[48:, :] + 40, 0, 255)
    col_seam[:, 96:] = np.clip(col_seam[:, 96:] + 40, 0, 255)
    assert seams_at(row_seam, [], [48]) > 1.1 and seams_at(col_seam, [96], []) > 1.1


def test_seams_of_a_result_read_the_plans_borders(photo, tmp_path):
    path = tmp_path / "result.png"
    Image.fromarray(photo.astype(np.uint8)).save(path)
    cut = TilePlan((100, 250), 48, 80)
    rows, cols = cut.borders()
    saved = np.asarray(Image.open(path), dtype=np.float64)
    assert seams(str(path), {"0": cut.to_dict()}) == pytest.approx(seams_at(saved, cols, rows))
    assert seams(str(path), {}) is None


def test_the_pool_sizes_a_batch_by_the_working_shape_not_the_decoded_photo(monkeypatch):
    """The daemon's plan holds the photo as decoded (2000x1500 here); it runs at 512x384 (size 512)."""
    from types import SimpleNamespace

    from pipeline.daemon import pool
    from pipeline.daemon.jobs import Plan

    monkeypatch.setenv("STYLE_PIPELINE_CACHE", "off")
    monkeypatch.setattr(batch, "cuda_free", lambda device: int(4 * photo_bytes((384, 512)) / 0.8) + 8)
    plan = Plan(None, Settings(size=512), Image.new("RGB", (2000, 1500)), [])
    assert pool.batch_size(SimpleNamespace(device=torch.device("cuda")), SimpleNamespace(batch=None), plan) == 4


def test_cuda_free_asks_torch_with_an_index_for_a_plain_cuda_device(monkeypatch):
    """On the H200 (2026-11-28) every GPU run failed at its first style target: torch's
    get_per_process_memory_fraction (and memory_reserved) reject torch.device("cuda") without an index with
    "Expected a torch.device with a specified index or an integer". These stand-ins refuse it the same way."""
    from pipeline.engine import memory

    def strict(answer):
        def query(device):
            if not isinstance(device, int):
                raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
            return answer
        return query

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", strict((30 << 30, 40 << 30)))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", strict(0.5), raising=False)
    monkeypatch.setattr(torch.cuda, "memory_reserved", strict(2 << 30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", strict(2 << 30))
    assert memory.cuda_free(torch.device("cuda")) == (20 << 30) - (2 << 30)  # the cap, less what torch holds
    assert memory.cuda_free(torch.device("cuda", 0)) == (20 << 30) - (2 << 30)


def test_cuda_free_counts_the_allocators_unused_cache_as_free(monkeypatch):
    """On the H200 (2026-11-28) an auto print's 2048 px level tiled at 9.9 GiB under a 20 GiB cap where a single
    2048 px run fitted whole at 12.6 GiB: the coarser levels' freed blocks, cached by torch's allocator (which
    reuses them, and gives them back at the cap), were counted as taken. What is allocated is taken."""
    from pipeline.engine import memory

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda index: 0.5, raising=False)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 9 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 1 * GIB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (60 * GIB, 80 * GIB))
    assert memory.cuda_free(torch.device("cuda")) == 39 * GIB  # the 40 GiB cap less the 1 GiB allocated
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (4 * GIB, 80 * GIB))  # others hold the rest
    assert memory.cuda_free(torch.device("cuda")) == 12 * GIB  # the device's free and this process's cache
