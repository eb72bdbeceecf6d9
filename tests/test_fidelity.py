"""The engine's own loss against the independent judge (bench/judge.py), and one resize from the original (issue 10).

The judge shares no code with the engine: its own VGG19 loading, preprocessing, targets and losses. It resizes
the painting straight to the content's shape, as the notebook does, and scores the saved 8-bit file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.engine import Settings, images
from pipeline.engine.transfer import JUDGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.judge import STYLE_WEIGHT, Judge, VGG  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.fixture(scope="module")
def judge_vgg():
    return VGG()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return images.load(Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples" / "coffee.jpg")


CASES = {  # content, styles, blend: shapes chosen so that every resize in the engine is a real one
    "landscape photo, portrait painting": ("photo", ["style2"], ()),
    "square photo, landscape painting": ("content", ["style"], ()),
    "blend of two paintings": ("photo", ["style2", "style"], (0.7, 0.3)),
}


@pytest.mark.parametrize("case", CASES)
def test_engine_loss_equals_the_independent_judge(engine, judge_vgg, request, tmp_path, case):
    content_name, style_names, blend = CASES[case]
    content = request.getfixturevalue(content_name)
    styles = [request.getfixturevalue(n) for n in style_names]
    # The judge is the notebook's loss at its raw 1e-5 at every size; style_strength's weight is size-aware (rev9a #2),
    # so the engine is given that raw weight here: the same objective, judged twice.
    result = engine.stylize(content, styles, Settings(size=56, steps=6, style_blend=blend, style_weight=STYLE_WEIGHT))
    saved = images.save(result.image, tmp_path / "out.png")
    judged = Judge(content, styles, list(blend) or None, vgg=judge_vgg).score(Image.open(saved))
    assert result.losses["total"] == pytest.approx(judged["loss"], rel=0.005)
    assert result.losses["style"] == pytest.approx(judged["style"], rel=0.005)
    assert result.log()["judge"] == JUDGE  # the run record names the judge its figures come from


def test_every_working_copy_is_resized_once_from_the_original(engine, content, style, style2, photo, monkeypatch):
    """Each pyramid level, style_scale != 1, a blend and preserve_color: every resize starts from an original."""
    originals = {content.size, style.size, style2.size, photo.size}
    sources: list[tuple[int, int]] = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sources.append(self.size)
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    settings = Settings(size=64, steps=2, scales=2, coarse_steps=2)
    engine.stylize(photo, [style2, style], settings.replace(style_blend=(0.5, 0.5), style_scale=0.7))
    engine.stylize(content, [style2], settings.replace(preserve_color=True))
    assert sources and set(sources) <= originals, f"resized from a resized copy: {set(sources) - originals}"
