"""The batched engine (issue 13): photos of one recipe share each network pass, each with its own L-BFGS."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.engine import Settings, images
from pipeline.engine.batch import batch_size_for

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples"

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.fixture(scope="module")
def photos():
    """Three real photos of one working shape (48x48 at size 48), and the astronaut again as a portrait."""
    square = [images.load(SAMPLES / f"{name}.jpg") for name in ("astronaut", "coffee", "rocket")]
    square = [p.crop((0, 0, min(p.size), min(p.size))) for p in square]
    tall = square[0].crop((0, 0, square[0].size[0] // 2, square[0].size[1]))
    return square, tall


def test_each_photo_of_a_batch_gets_what_it_gets_alone(engine, style, photos):
    square, tall = photos
    settings = Settings(size=48, steps=10, early_stop_tol=0, log_every=1)
    seen: dict[int, list[int]] = {}
    batch = engine.stylize_batch([*square, tall], [style], settings,
                                 on_step=lambda i, info: seen.setdefault(i, []).append(info.step))
    assert [r.image.size for r in batch] == [(48, 48)] * 3 + [(24, 48)]
    for i, (photo, result) in enumerate(zip([*square, tall], batch)):
        alone = engine.stylize(photo, [style], settings)
        assert result.steps == alone.steps == 10 and seen[i] == list(range(1, 11))
        assert result.losses["total"] == pytest.approx(alone.losses["total"], rel=0.01), i
        assert [p["loss"] for p in result.curve] == pytest.approx([p["loss"] for p in alone.curve], rel=0.01)
    assert batch[0].losses["total"] != pytest.approx(batch[1].losses["total"], rel=0.05)  # not one photo's copy


def test_one_packed_host_read_serves_the_whole_batch(engine, style, photos, host_reads):
    square, _ = photos
    settings = Settings(size=40, steps=6, early_stop_tol=0, log_every=1)
    steps_seen: list[int] = []
    host_reads.clear()
    engine.stylize_batch(square, [style], settings, on_step=lambda i, info: steps_seen.append(len(host_reads)))
    # Reads while the level ran: one "tolist" per batched evaluation, shared by the three photos' steps.
    during = host_reads[: max(steps_seen)]
    assert set(during) == {"tolist"} and len(during) <= 6 + 2
    assert len(steps_seen) == 18


def test_a_lone_photo_runs_the_one_photo_path(engine, style, photos):
    square, _ = photos
    settings = Settings(size=40, steps=4)
    [batched] = engine.stylize_batch(square[:1], [style], settings)
    alone = engine.stylize(square[0], [style], settings)
    assert batched.image.tobytes() == alone.image.tobytes() and batched.losses == alone.losses


def test_batch_size_is_one_off_cuda():
    assert batch_size_for(torch.device("cpu"), (512, 512)) == 1
