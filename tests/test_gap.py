"""Issue 13: between one photo's last step and the next one's first, the engine does only what is needed.

Real weights, tiny pictures, one torch thread. The network's passes are counted with a forward hook on the engine's
VGG (torch's own API), at the points a listener marks.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from pipeline.engine import Settings, images
from pipeline.errors import Cancelled

pytestmark = pytest.mark.usefixtures("torch_threads")
SETTINGS = Settings(size=32, steps=3, early_stop_tol=0, device="cpu")


@pytest.fixture
def passes(engine):
    """The engine's VGG forward passes so far (a list, so a listener can read it as it goes)."""
    count = [0]
    handle = engine.vgg.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    yield count
    handle.remove()


def test_the_closing_makes_one_network_pass(engine, content, style, passes):
    """The judged-loss pass reuses the final level's objective: its content target is not made again (it was
    two passes: the content target, then the judged loss)."""
    engine.stylize(content, [style], SETTINGS)  # the style's targets are cached from here on
    at_last_step = []
    result = engine.stylize(content, [style], SETTINGS, listeners=[lambda info: at_last_step.append(passes[0])])
    assert passes[0] - at_last_step[-1] == 1
    assert 0 < result.timings["closing"] < result.timings["total"]
    assert 0 < result.timings["setup"] < result.timings["total"]


def test_the_judged_loss_is_the_fresh_objective_on_the_saved_picture(engine, content, style):
    """Reusing the objective changes nothing: the same value as one built afresh, on the saved 8-bit picture."""
    result = engine.stylize(content, [style], SETTINGS)
    problem, hw = engine.build_loss(content, [style], SETTINGS)
    with torch.no_grad():
        total, parts = problem.loss(images.to_tensor(result.image))
    assert result.image.size == hw[::-1]
    assert result.losses["total"] == float(total)
    assert [result.losses[k] for k in ("content", "style", "tv")] == parts.tolist()


def test_the_content_is_resized_once_per_run(engine, content, style, monkeypatch):
    """One LANCZOS resize of the photo for a one-level run: it was four (a throwaway one to learn the working
    shape, the start pixels, the content target, and again for the closing pass)."""
    resizes = []
    plain = Image.Image.resize

    def counted(self, size, *args, **kwargs):
        if self.size == content.size:
            resizes.append(size)
        return plain(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", counted)
    engine.stylize(content, [style], SETTINGS)
    assert len(resizes) == 1


def test_a_run_without_a_checkpoint_to_resume_hashes_no_photo(engine, content, style, tmp_path, monkeypatch):
    """The checkpoint's fingerprint (a hash of the photo and the paintings) is made when a checkpoint is saved or
    found, not before every first step; a saved one still resumes (the fingerprint matches)."""
    from pipeline.engine import checkpoint as checkpoints

    hashed, plain = [], checkpoints.digest
    monkeypatch.setattr(checkpoints, "digest", lambda img: hashed.append(img) or plain(img))
    checkpoint = tmp_path / "run.ckpt"
    engine.stylize(content, [style], SETTINGS, checkpoint=checkpoint)
    photo = content.tobytes()  # the photo's own pixels: a painting of the same size is not it
    assert not any(img.tobytes() == photo for img in hashed) and not checkpoint.exists()
    stopped = SETTINGS.replace(checkpoint_every=1, checkpoint_seconds=0)
    with pytest.raises(Cancelled):
        engine.stylize(content, [style], stopped, checkpoint=checkpoint, should_stop=lambda: True)
    resumed = engine.stylize(content, [style], stopped, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 1 and any(img.tobytes() == photo for img in hashed)


def test_a_photo_prepared_ahead_runs_without_a_resize_and_gives_the_same_result(engine, content, style, monkeypatch):
    """engine.prepared.prepare makes the first working copy before the run (the daemon's prefetch thread calls it):
    the run then resizes the photo not at all, and its result is the same, bit for bit."""
    from pipeline.engine.prepared import prepare

    plain = engine.stylize(content, [style], SETTINGS)
    ahead = prepare(content, SETTINGS)
    resizes, real = [], Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: resizes.append(self.size) or
                        real(self, size, *a, **k))
    result = engine.stylize(ahead, [style], SETTINGS)
    assert content.size not in resizes
    assert result.losses == plain.losses and result.image.tobytes() == plain.image.tobytes()
