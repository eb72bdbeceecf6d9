"""Large prints (issue 14): an auto print's finer levels keep the coarser sizes' style term (engine/pyramid.py)."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import Settings, images, levels, transfer
from pipeline.engine.losses import StyleLoss
from pipeline.engine.pyramid import PyramidLoss, shrink

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.fixture
def two_levels(monkeypatch):
    """auto's thresholds scaled down so that a 64 px print walks 32-64, as a 2048 px one walks 512-1024-2048."""
    monkeypatch.setattr(levels, "SINGLE_MAX", 32)
    monkeypatch.setattr(levels, "COARSE_MAX", 48)


def _coarse_style(engine, style, picture: torch.Tensor, hw=(32, 32)) -> torch.Tensor:
    """The style term of ``picture`` shrunk to the coarse level, against the painting's Grams at that level."""
    targets = engine.style_targets(style, hw, Settings())
    return StyleLoss(targets, Settings().layer_weights)(engine.vgg(shrink(picture, hw))).sum()


@pytest.mark.parametrize("src, dst", [((96, 96), (48, 48)), ((100, 90), (37, 50)), ((160, 100), (40, 25))])
def test_shrink_is_pillows_lanczos(content, src, dst):
    """The term looks at the print as the coarser level's painting was made (images.resize_once, LANCZOS), within
    Pillow's own rounding to 8 bits. torch's antialiased bilinear is up to 50 levels off (2-6 on average), and a
    print held to the painting through it read 0.53x through it but 4.65x through LANCZOS (bench/look_levels.py)."""
    picture = content.resize(src[::-1])
    ours = shrink(images.to_tensor(picture), dst)
    pillow = images.to_tensor(picture.resize(dst[::-1], images.Image.Resampling.LANCZOS))
    assert ours.shape == pillow.shape and float((ours - pillow).abs().max()) <= 1.2


def test_the_fine_level_of_an_auto_print_adds_the_coarse_sizes_style_term(engine, content, style, two_levels):
    settings = Settings(size=64, steps=2)
    problem, hw = engine.build_loss(content, [style], settings)
    assert hw == (64, 64) and isinstance(problem.loss, PyramidLoss)
    x = images.to_tensor(images.resize_once(content, hw)).requires_grad_()
    total, parts = problem(x)
    own, own_parts = problem.loss.level(x)
    coarse = _coarse_style(engine, style, x)
    weight = settings.resolved_style_weight(engine.weights.kind, 64)  # the level's: its coarser terms share it
    assert float(total.detach()) == pytest.approx(float((own + weight * coarse).detach()), rel=1e-5)
    assert float(parts[1]) == pytest.approx(float(own_parts[1] + coarse.detach()), rel=1e-5)
    total.backward()
    with_pyramid = x.grad.clone()
    x.grad = None
    problem.loss.level(x)[0].backward()
    assert not torch.allclose(with_pyramid, x.grad)  # the coarse term steers the pixels too


def test_a_number_of_scales_keeps_todays_levels_without_the_pyramid(engine, content, style, two_levels):
    problem, _ = engine.build_loss(content, [style], Settings(size=64, steps=2, scales=2))
    assert not isinstance(problem.loss, PyramidLoss)


def test_a_tiled_coarse_term_equals_the_whole_one(engine, content, style, monkeypatch):
    """At a budget that tiles both levels (48-96 px), the coarse term is summed over tiles: the same value and
    gradient as the whole picture's."""
    monkeypatch.setattr(levels, "SINGLE_MAX", 48)
    monkeypatch.setattr(levels, "COARSE_MAX", 72)
    whole, hw = engine.build_loss(content, [style], Settings(size=96, steps=2))
    tiled, _ = engine.build_loss(content, [style], Settings(size=96, steps=2, max_memory="1MB"))
    assert type(tiled.loss.coarser[0]).__name__ == "Shrunk" and tiled.loss.coarser[0].loss.plan.count == 4
    x = images.to_tensor(images.resize_once(content, hw))
    grads = []
    for problem in (whole, tiled):
        pixels = x.clone().requires_grad_()
        total, _ = problem(pixels)
        total.backward()
        grads.append((float(total.detach()), pixels.grad))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-4)
    assert float((grads[1][1] - grads[0][1]).abs().max()) <= 1e-3 * float(grads[0][1].abs().max())
    with torch.no_grad():  # and it reports what the whole term reports: its style part, no content or TV
        parts = [[float(v) for v in problem.loss.coarser[0](x)[1]] for problem in (whole, tiled)]
    assert parts[0][0] == parts[0][2] == 0 and parts[1] == pytest.approx(parts[0], rel=1e-4, abs=1e-6)


def test_an_auto_print_keeps_the_coarse_look_that_the_fine_level_lost_without_it(engine, content, style, two_levels,
                                                                                monkeypatch):
    """The defect: each finer level drifted off the coarser sizes' statistics (the H200's 2048 px print read 6.7x
    the 1024 px result's style term at 1024 px). With the pyramid term the print, shrunk to the coarse size, is
    closer to the painting there than the same run without it."""
    settings = Settings(size=64, steps=6, early_stop_tol=0)
    looks = {}
    for name in ("pyramid", "without"):
        if name == "without":
            monkeypatch.setattr(transfer, "coarser_terms", lambda *a, **k: [])
        result = engine.stylize(content, [style], settings)
        assert [max(hw) for hw in result.scales] == [32, 64]
        with torch.no_grad():
            looks[name] = float(_coarse_style(engine, style, images.to_tensor(result.image)))
    assert looks["pyramid"] < 0.9 * looks["without"], looks


def test_the_fine_level_is_planned_beside_the_terms_gradient_not_their_passes(engine, content, style, monkeypatch):
    """The coarser terms run (forward and backward) before the fine level's pass, so only their summed gradient
    (one picture vector) sits beside it: a budget the fine level fits with that vector keeps it whole; one byte
    less tiles it. Before, their passes (a third of the level's) were reserved: the same budget tiled it."""
    from pipeline.engine import memory, shapes
    from pipeline.engine.pyramid import coarser_reserve

    monkeypatch.setattr(levels, "SINGLE_MAX", 48)
    monkeypatch.setattr(levels, "COARSE_MAX", 72)
    canvas = shapes.canvas(engine.build_loss(content, [style], Settings(size=96, steps=2))[1])
    alone = memory.photo_bytes(canvas, "lbfgs", Settings().lbfgs_history, "fp32")
    assert coarser_reserve(canvas) == canvas[0] * canvas[1] * 12  # an RGB fp32 vector
    kinds = []
    for budget in (alone + coarser_reserve(canvas), alone + coarser_reserve(canvas) - 1):
        planned, _ = engine.build_loss(content, [style], Settings(size=96, steps=2, max_memory=f"{budget}B"))
        kinds.append(type(planned.loss.level).__name__)
    assert kinds == ["TotalLoss", "TiledLoss"]


def _graph_convolutions(tensor: torch.Tensor) -> int:
    """How many convolutions the autograd graph behind ``tensor`` holds (each with its saved activations)."""
    seen, todo, count = set(), [tensor.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += "Convolution" in type(node).__name__
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return count


def test_the_coarser_terms_hold_no_activations_until_the_one_backward(engine, content, style, two_levels):
    """The defect behind the 4096 px print's 14x: the coarse terms' graphs lived until the optimiser's backward,
    beside the fine level's, so the planner had to reserve their passes. Now the graph the optimiser gets holds
    the fine level's convolutions alone, and the gradient is the same (value and gradient: the test above)."""
    problem, hw = engine.build_loss(content, [style], Settings(size=64, steps=2))
    x = images.to_tensor(images.resize_once(content, hw)).requires_grad_()
    total, _ = problem(x)
    own, _ = problem.loss.level(x)
    assert _graph_convolutions(own) > 0
    assert _graph_convolutions(total) == _graph_convolutions(own)


def test_a_4096_px_auto_print_under_20_gib_is_cut_as_before_the_pyramid(engine):
    """The H200's 4096 px auto print under a 20 GiB cap (planning arithmetic only, at the GPU's sizes): with the
    terms' passes reserved its finest level was planned at a quarter of the budget, 36 tiles of 720 px and 3 L-BFGS
    pairs (and into 32 px cores, 16384 tiles, where the cap had less free); now 9 tiles and the full history, as
    without the pyramid, and the 2048 px term, which keeps no optimiser state, in 4 tiles."""
    from pipeline.engine.pyramid import coarser_reserve, term_plan

    settings = Settings(size=4096, max_memory="20GiB")
    found, _ = levels.levels((4096, 4096), settings)
    plan = levels.tile_plan(engine, found[-1], settings, "fp32", coarser_reserve(found[-1]))
    assert (plan.count, plan.history) == (9, None)
    assert plan.count == levels.tile_plan(engine, found[-1], settings, "fp32").count  # as with no terms
    terms = [term_plan(engine, hw, settings, "fp32", found[-1], plan) for hw in found[:-1]]
    assert terms[:2] == [None, None] and terms[2].count == 4


def test_the_coarser_terms_gradient_under_bf16_is_the_fp32_backward_of_their_graph(engine, content, style,
                                                                                  two_levels):
    """The terms' backward ran inside the autocast that Problem opens: under bf16 the fp32 Gram's backward
    (losses.gram) ran its matmul in bf16, ~1e-3 off the gradient that the same graph gives outside autocast,
    which is where the level's own backward (the optimiser's) runs."""
    problem, hw = engine.build_loss(content, [style], Settings(size=64, steps=2, precision="bf16"))
    assert problem.autocast is torch.bfloat16 and isinstance(problem.loss, PyramidLoss)
    x = images.to_tensor(images.resize_once(content, hw)).requires_grad_()
    total, _ = problem(x)
    total.backward()
    pixels = x.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        values = [problem.loss.level(pixels)[0]] + [term(pixels)[0] for term in problem.loss.coarser]
    for value in values:
        value.backward()
    error = float((x.grad - pixels.grad).abs().max()) / float(pixels.grad.abs().max())
    assert error <= 1e-5, error
