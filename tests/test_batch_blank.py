"""A photo whose start is already "blank" (a document, a high-key shot: over 90% pure white) is no failure when its
result is blank too: the one-photo path accepts it (its start was blank), and so must the batch, else the photo's
whole run was done a second time, alone (rev6b finding 5).

The white photo's RESULT must be blank for this to test anything. It was written when style_strength 0.001 meant the
raw 1e-8; since the size-aware weight (rev9a #2) 0.001 at 40 px means 1e-6, the result was only 51% saturated, and
the test passed with the fix undone (rev9g #1). So it pins the raw 1e-8 and asserts the result is blank."""
from __future__ import annotations

import collections

import pytest
from PIL import Image, ImageDraw

from pipeline.engine import Settings, images
from pipeline.engine.optimize import is_blank

pytestmark = pytest.mark.usefixtures("torch_threads")


def test_a_high_key_photo_in_a_batch_runs_once(engine, style2, content):
    white = Image.new("RGB", (40, 32), (255, 255, 255))
    ImageDraw.Draw(white).rectangle((16, 12, 21, 17), fill=(30, 30, 30))  # a small dark mark: under 3% of it
    photo = content.convert("RGB").resize((40, 32))
    assert is_blank(images.to_tensor(white)) and not is_blank(images.to_tensor(photo))
    # the raw 1e-8 it was written under (a raw style_weight is not size-aware): the white photo's result is blank
    settings = Settings(size=40, steps=6, style_weight=1e-8, early_stop_tol=0, log_every=1)
    calls = collections.Counter()
    batch = engine.stylize_batch([white, photo], [style2], settings, on_step=lambda i, info: calls.update([i]))
    assert is_blank(images.to_tensor(batch[0].image)), "the precondition: the white photo's result is blank"
    assert dict(calls) == {0: 6, 1: 6}  # was {0: 12, 1: 6}: the white photo's run again, alone, from scratch
    alone = engine.stylize(white, [style2], settings)
    assert batch[0].steps == alone.steps == 6 and batch[0].retries == alone.retries == []
    assert batch[0].losses["total"] == pytest.approx(alone.losses["total"], rel=0.01)
