"""A run's targets are made in its own precision (rev6b finding 8, the part a CPU can check): the style cache is
keyed by the precision, so another precision's Grams never serve a run, and the precision's CUDA flags (TF32) are
set before a level's style and content targets are made, not after them as the loss was built."""
from __future__ import annotations

from collections import OrderedDict

import pytest

from pipeline.engine import Settings, transfer
from pipeline.engine.transfer import _Run

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.fixture
def own_cache(engine, monkeypatch):
    """An empty style cache and counters for this test alone (the session's engine is shared)."""
    monkeypatch.setattr(engine, "cache", OrderedDict())
    monkeypatch.setattr(engine, "cache_hits", 0)
    monkeypatch.setattr(engine, "cache_misses", 0)
    return engine


def test_the_style_cache_keeps_each_precisions_grams_apart(own_cache, style):
    engine = own_cache
    bf16 = engine.style_targets(style, (32, 32), Settings(precision="bf16"))
    fp32 = engine.style_targets(style, (32, 32), Settings(precision="fp32"))
    assert (engine.cache_misses, engine.cache_hits) == (2, 0) and bf16 is not fp32  # was (1, 1): bf16's served
    assert engine.style_targets(style, (32, 32), Settings(precision="fp32")) is fp32 and engine.cache_hits == 1
    # tf32 is plain fp32 off CUDA (precision.resolve): the same Grams, rightly shared here
    assert engine.style_targets(style, (32, 32), Settings(precision="tf32")) is fp32 and engine.cache_hits == 2


def test_the_runs_precision_is_set_before_its_targets_are_made(own_cache, content, style, monkeypatch):
    engine, order = own_cache, []

    def spy(name, real):
        return lambda *args, **kwargs: order.append(name) or real(*args, **kwargs)

    monkeypatch.setattr(engine, "autocast", spy("precision", engine.autocast))
    monkeypatch.setattr(engine, "style_targets", spy("style", engine.style_targets))
    monkeypatch.setattr(transfer, "content_targets", spy("content", transfer.content_targets))
    run = _Run(engine, content, [style], Settings(size=32, scales=1, precision="fp32"), None, None, None)
    run.loss(run.levels[-1])
    assert order[0] == "precision" and {"style", "content"} <= set(order), order  # was style, content, precision
