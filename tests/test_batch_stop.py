"""The batch's own stop (the daemon stops, the run window closes) while a later shape group runs: the photos of
the groups before it are finished, and keep their Results (rev6b finding 6: the call raised Cancelled and lost
them); the photos not finished get the Cancelled. With nothing finished the call still ends with Cancelled."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.engine import Result, Settings, images
from pipeline.errors import Cancelled

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples"

pytestmark = pytest.mark.usefixtures("torch_threads")


def test_a_stop_in_a_later_shape_group_keeps_the_earlier_groups_results(engine, style):
    square = [images.load(SAMPLES / f"{name}.jpg") for name in ("astronaut", "coffee")]
    square = [p.crop((0, 0, min(p.size), min(p.size))) for p in square]
    tall = square[0].crop((0, 0, square[0].size[0] // 2, square[0].size[1]))
    settings = Settings(size=32, steps=4, early_stop_tol=0, log_every=1)
    seen: set[int] = set()
    results = engine.stylize_batch([*square, tall], [style], settings, on_step=lambda i, info: seen.add(i),
                                   should_stop=lambda: 2 in seen)
    assert [type(r) for r in results] == [Result, Result, Cancelled]
    assert results[0].steps == results[1].steps == 4 and results[2].step == 1
    alone = engine.stylize(square[1], [style], settings)
    assert results[1].losses["total"] == pytest.approx(alone.losses["total"], rel=0.01)


def test_an_unreasoned_error_in_a_lone_rerun_keeps_the_batchmates_result(engine, style, monkeypatch):
    """rev6f B1 variant: photo 0's batch result is judged failed (as a blank one is) and it reruns alone after the
    batch; that rerun raises an error without a Reason (a device fault). It left stylize_batch, and the daemon gave
    every photo that error: photo 1's finished Result was dropped and it was charged an attempt. Now photo 1 keeps
    its Result and photo 0 gets the error in its own slot."""
    from pipeline.engine import batch as batch_mod
    photo = images.load(SAMPLES / "coffee.jpg")
    photo = photo.crop((0, 0, min(photo.size), min(photo.size)))
    real, calls = batch_mod.close, []

    def close(run, pixels, *args):
        calls.append(run)
        return None if len(calls) == 1 else real(run, pixels, *args)

    def fault(*_, **__):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(batch_mod, "close", close)
    monkeypatch.setattr(engine, "stylize", fault)
    results = engine.stylize_batch([photo, photo.transpose(0)], [style], Settings(size=32, steps=3, early_stop_tol=0))
    assert isinstance(results[0], RuntimeError) and "illegal memory access" in str(results[0])
    assert isinstance(results[1], Result) and results[1].steps == 3
    with pytest.raises(RuntimeError):  # nothing finished: the call ends with the error, as a lone run's
        engine.stylize_batch([photo], [style], Settings(size=32, steps=3, early_stop_tol=0))
