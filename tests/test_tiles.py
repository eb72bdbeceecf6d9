"""Large prints (issue 14): tiled evaluation equals the untiled one, the memory budget, coarse-to-fine levels."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from pipeline.engine import Settings, images
from pipeline.engine.levels import auto_count, levels
from pipeline.engine.memory import plan
from pipeline.engine.settings import field_docs, parse_bytes
from pipeline.engine.transfer import _Run
from pipeline.engine import tiles
from pipeline.engine.losses import StyleLoss, StyleTargets
from pipeline.engine.tiles import TiledLoss, TilePlan, halo_for, reach, tiled_content, tiled_grams
from pipeline.engine.vgg import LAST_INDEX
from pipeline.errors import Cancelled, SettingsError

pytestmark = pytest.mark.usefixtures("torch_threads")

WIDE = (64, 288)  # rows, cols: wider than core + 2 halos, so inner tile edges (zero-padded) are exercised


THIN = (32, 288)  # for whole runs: half the pixels, still three tiles of core 96


def _strip(content: Image.Image, hw: tuple[int, int]) -> Image.Image:
    return content.crop((0, 200, content.width, 200 + content.width * hw[0] // hw[1])).resize(hw[::-1])


@pytest.fixture(scope="module")
def wide(content) -> Image.Image:
    return _strip(content, WIDE)


@pytest.fixture(scope="module")
def thin(content) -> Image.Image:
    return _strip(content, THIN)


def test_reach_of_conv5_1_is_measured_from_the_network(engine):
    # relu5_1 at position q depends on pixels 16q-70 .. 16q+15+70: 70 px each side of its own 16 px block
    assert reach(engine.vgg.features, LAST_INDEX) == (70, 70)
    assert halo_for(engine.vgg.features, LAST_INDEX) == 80


def test_plan_covers_every_pixel_once_with_aligned_tiles():
    p = TilePlan((100, 250), 48, 80)
    cover = torch.zeros(100, 250)
    for tile in p.tiles():
        assert tile.rows[0] % 16 == 0 and tile.cols[0] % 16 == 0
        cover[tile.core_rows[0]:tile.core_rows[1], tile.core_cols[0]:tile.core_cols[1]] += 1
        assert tile.rows[0] <= max(0, tile.core_rows[0] - 80) and tile.cols[1] >= min(250, tile.core_cols[1] + 80)
    assert bool((cover == 1).all())


def test_a_plan_cuts_its_tiles_once_and_the_halo_is_walked_once_per_network(engine, monkeypatch):
    cut = TilePlan((100, 250), 48, 80)
    assert cut.tiles() is cut.tiles() and cut.count == 10  # not re-cut on each of a level's evaluations
    assert TilePlan.from_dict(cut.to_dict()) == cut  # the cache is no field: plans still compare by their cut
    walks = []
    monkeypatch.setattr(tiles, "reach", lambda f, last: walks.append(last) or (70, 70))
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1))
    assert halo_for(network, 0) == halo_for(network, 0) == 80 and walks == [0]
    held = len(tiles._HALOS)
    del network
    assert len(tiles._HALOS) == held - 1  # held weakly: a dropped engine's network is not kept by the cache


def test_the_tiled_style_term_is_the_untiled_one_per_layer_with_any_weights(engine, wide, style):
    problem, _ = engine.build_loss(wide, [style], Settings(size=max(WIDE)))
    x = images.to_tensor(wide).flip(-1)  # not the content: every term is non-zero
    cut, targets = TilePlan(WIDE, 96, 80), problem.loss.style.targets
    content = tiled_content(engine.vgg, images.to_tensor(wide), cut)
    mixed = (0.2, 0.5, 1.5, 0.7, 3.0)  # not the default weights
    with torch.no_grad():
        feats = engine.vgg(x)
        summed = TiledLoss(engine.vgg, content, targets, mixed, (1.0, 1.0, 0.0), cut)._first_pass(x)[0]
        onehots = [tuple(w if k == i else 0.0 for k, w in enumerate(mixed)) for i in range(len(mixed))]
        for weights in [mixed, *onehots]:
            whole = float(StyleLoss(StyleTargets(targets), weights)(feats)[0])
            tiled = float(TiledLoss(engine.vgg, content, targets, weights, (1.0, 1.0, 0.0), cut)._style(summed))
            assert tiled == pytest.approx(whole, rel=1e-5) and whole > 0, weights


def _loss_and_grad(problem, x):
    var = x.clone().requires_grad_()
    loss, parts = problem(var)
    loss.backward()
    return float(loss.detach()), parts, var.grad


@pytest.mark.parametrize("halo, exact", [(80, True), (32, False)])
def test_tiled_loss_and_gradient_equal_the_untiled_ones(engine, wide, style, halo, exact):
    settings = Settings(size=max(WIDE), tv_weight=0.5)
    problem, hw = engine.build_loss(wide, [style], settings)
    assert hw == WIDE
    x = (images.to_tensor(wide) + 30 * torch.randn(1, 3, *WIDE, generator=torch.Generator().manual_seed(0)))
    x = x.clamp(0, 255)
    loss, parts, grad = _loss_and_grad(problem, x)

    cut = TilePlan(WIDE, 96, halo)
    assert cut.count == 3
    whole = problem.loss
    target = tiled_content(engine.vgg, images.to_tensor(wide), cut)
    tiled = TiledLoss(engine.vgg, target, whole.style.targets, settings.layer_weights, whole.weights, cut)
    t_loss, t_parts, t_grad = _loss_and_grad(tiled, x)
    error = float((t_grad - grad).abs().max() / grad.abs().max())
    if exact:  # float rounding only: measured 1e-7 (loss) and 8e-7 (gradient, relative to its largest value)
        assert t_loss == pytest.approx(loss, rel=1e-5)
        assert torch.allclose(t_parts, parts, rtol=1e-5)
        assert error < 1e-5
    else:  # a halo under conv5_1's reach changes the features at the inner tile edges: the test can fail
        assert error > 1e-4


def test_tiled_grams_equal_the_whole_pictures(engine, wide):
    pixels = images.to_tensor(wide)
    whole = engine.vgg(pixels)
    grams = tiled_grams(engine.vgg, pixels, TilePlan(WIDE, 64, 80))
    for layer, g in grams.items():
        f = whole[layer].reshape(whole[layer].shape[1], -1)
        assert torch.allclose(g[0], f @ f.T, rtol=1e-4, atol=1e-3 * float(g.abs().max())), layer


def test_budget_picks_untiled_when_it_fits_and_tiles_when_not():
    kw = dict(halo=80, optimizer="lbfgs", history=20, precision="fp32")
    assert plan((1024, 1024), 8 << 30, **kw) is None
    cut = plan((4096, 4096), 20 << 30, **kw)
    assert cut is not None and 1 < cut.count <= 16 and cut.core % 16 == 0
    assert plan((4096, 4096), 12 << 30, **kw).core < cut.core  # a smaller budget, smaller tiles
    assert cut.history is None  # 20 pairs of 4096 px fit beside the tiles
    huge = plan((8192, 8192), 20 << 30, **kw)  # one L-BFGS pair is 1.6 GB here: 20 of them cannot fit 20 GiB
    assert huge.history == 3 and huge.to_dict()["history"] == 3 and TilePlan.from_dict(huge.to_dict()) == huge


def test_a_forced_tiny_budget_tiles_and_still_finishes(engine, thin, style):
    # 31.5 MB: L-BFGS's whole-picture state (5.4 MB) and one tile of 32x256 px (25.4 MB at 3100 B/px) fit; the
    # whole picture's pass (28.6 MB) does not
    settings = Settings(size=max(THIN), steps=2, scales=1, max_memory="31.5MB", early_stop_tol=0)
    seen = []
    result = engine.stylize(thin, [style], settings, on_step=seen.append)
    assert result.tiles == {0: {"hw": list(THIN), "core": 96, "halo": 80, "tiles": 3}}
    assert result.log()["tiles"] == result.tiles
    assert seen and seen[-1].tiles == 3 and result.steps == 2
    untiled = engine.stylize(thin, [style], settings.replace(max_memory=None))
    assert untiled.tiles == {}
    # the same objective: the runs differ by float rounding in the optimiser's path only
    assert result.losses["total"] == pytest.approx(untiled.losses["total"], rel=1e-3)


def test_a_resumed_tiled_run_ends_within_1_percent(engine, thin, style, tmp_path):
    settings = Settings(size=max(THIN), steps=3, scales=1, max_memory="27MB", optimizer="adam", log_every=1,
                        checkpoint_every=1, checkpoint_seconds=0, early_stop_tol=0)
    full = engine.stylize(thin, [style], settings)
    assert full.tiles[0]["tiles"] == 3  # Adam keeps less state than L-BFGS: a smaller budget to tile
    checkpoint = tmp_path / "print.ckpt"
    seen: list[int] = []
    with pytest.raises(Cancelled):
        engine.stylize(thin, [style], settings, checkpoint=checkpoint, on_step=lambda i: seen.append(i.step),
                       should_stop=lambda: seen[-1] >= 1)
    state = torch.load(checkpoint, weights_only=False)
    assert state["level"] == 0 and state["tiles"] == {0: full.tiles[0]}
    resumed = engine.stylize(thin, [style], settings, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 1 and resumed.steps == 3 and resumed.tiles == full.tiles
    assert resumed.losses["total"] == pytest.approx(full.losses["total"], rel=0.01)


@pytest.mark.parametrize("side, count, coarse", [(256, 1, 256), (1024, 1, 1024), (1025, 2, 512), (1536, 2, 768),
                                                 (2048, 3, 512), (4096, 4, 512), (6000, 4, 750), (8192, 5, 512)])
def test_scales_auto_picks_the_documented_levels(side, count, coarse):
    assert auto_count((side, side // 2)) == count
    found, steps = levels((side // 2, side), Settings(steps=150))
    assert len(found) == count and max(found[0]) == coarse and found[-1] == (side // 2, side)
    assert steps == [150, 75, 37, 20, 20][:count]  # the coarse level forms the strokes; finer ones refine


@pytest.mark.parametrize("hw, found, steps", [((64, 4096), [(32, 2048), (64, 4096)], [150, 75]),
                                              ((40, 4096), [(40, 4096)], [150]),
                                              ((256, 4096), [(32, 512), (64, 1024), (128, 2048), (256, 4096)],
                                               [150, 75, 37, 20])])
def test_scales_auto_a_panoramas_documented_levels(hw, found, steps):
    """README (rev7b): a panorama keeps the long side's levels whose short side is at least 32 px; the coarsest
    kept gets the full steps."""
    assert levels(hw, Settings(steps=150)) == (found, steps)


def test_scales_number_keeps_todays_levels():
    assert levels((64, 64), Settings(scales=2, steps=4, coarse_steps=3)) == ([(32, 32), (64, 64)], [3, 4])
    assert levels((2048, 2048), Settings(scales=1)) == ([(2048, 2048)], [150])


def test_a_coarse_steps_set_under_auto_is_honoured_and_the_docs_say_what_auto_does(engine):
    """rev9a #4: `--size 2048 --steps 300 --coarse-steps 50` ran 300, 150, 75 (auto's rule) while --help said
    steps were "at the final scale" and coarse_steps "at each coarser level"; coarse_steps was never read, and the
    log recorded 50 anyway. Now a coarse_steps set is run as written; unset, auto's rule stands, as documented."""
    photo, painting = Image.new("RGB", (2400, 1600), (120, 90, 60)), Image.new("RGB", (64, 64), (10, 200, 30))
    run = _Run(engine, photo, [painting], Settings(size=2048, steps=300, coarse_steps=50), None, None, None)
    assert len(run.levels) == 3 and run.steps_per_level == [50, 50, 300]  # planned only: nothing is computed
    assert levels((1365, 2048), Settings(steps=300))[1] == [300, 150, 75]  # unset: auto's own rule
    assert levels((64, 64), Settings(scales=2, steps=4))[1] == [100, 4]  # unset with a number: 100, as before
    docs = field_docs()
    assert "auto" in docs["steps"] and "300, 150, 75" in docs["steps"] and "auto" in docs["coarse_steps"]


def test_settings_read_sizes_and_refuse_nonsense():
    assert parse_bytes("20GiB") == 20 << 30 and parse_bytes("512 MB") == 512_000_000 and parse_bytes("1000B") == 1000
    for bad in (dict(max_memory="lots"), dict(scales="many"), dict(scales=0), dict(print_dpi=0)):
        with pytest.raises(SettingsError):
            Settings(**bad).validate()


@pytest.mark.parametrize("given, words", [("20", ["'20' has no unit", "20GiB", "20B if bytes"]),
                                          (20, ["'20' has no unit", "20GiB"]), ("0GiB", ["no memory at all"]),
                                          ("0.0MB", ["no memory at all"]),
                                          (21474836480, ["has no unit", "write 20GiB", "21474836480B"]),
                                          ("3221225472", ["write 3GiB"]), ("1.5", ["1.5GiB"])])
def test_a_max_memory_without_a_unit_or_of_nothing_is_refused(given, words):
    """`max_memory: 20` (meant 20 GiB) was read as 20 bytes: the run was cut into tiles, its L-BFGS history cut
    to 3, many times slower and with another result, without a word (rev6b finding 3)."""
    with pytest.raises(SettingsError) as err:
        Settings(max_memory=given).validate()
    assert err.value.field == "max_memory" and all(w in str(err.value) for w in words), str(err.value)
    assert "1.5B" not in str(err.value)  # no fractional bytes offered (rev6d)
    with pytest.raises(SettingsError):
        parse_bytes(given)


def test_a_unitless_max_memory_is_refused_in_the_config_at_its_line(tmp_path):
    from daemon_helpers import STYLES
    from test_daemon_parts import problems_of

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  a:\n    styles: [starry_night.jpg]\n    max_memory: '20'\n")
    assert problems_of(path) == ["config.yaml:5: recipes.a.max_memory: '20' has no unit (20 bytes?); write e.g. "
                                 "20GiB or 20MiB (20B if bytes)"]


@pytest.mark.parametrize("written, said", [("20", "'20' has no unit (20 bytes?); write e.g. 20GiB"),
                                           ("21474836480", "'21474836480' has no unit; if bytes, write 20GiB")])
def test_an_unquoted_number_for_max_memory_is_told_its_unit_not_only_must_be_text(tmp_path, written, said):
    """Unquoted, YAML hands a number over: the type check alone said "must be text (got 21474836480)", which
    names no fix (mend6d's check). The engine's own message now answers it, with the unit to write."""
    from daemon_helpers import STYLES
    from test_daemon_parts import problems_of

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  a:\n    styles: [starry_night.jpg]\n    max_memory: {written}\n")
    problems = problems_of(path)
    assert len(problems) == 1 and problems[0].startswith(f"config.yaml:5: recipes.a.max_memory: {said}"), problems


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_print_dpi_is_written_into_the_file(content, fmt):
    data = images.encode(content.resize((32, 32)), fmt, dpi=300)
    assert Image.open(io.BytesIO(data)).info["dpi"] == pytest.approx((300, 300), abs=0.01)
    plain = Image.open(io.BytesIO(images.encode(content.resize((32, 32)), fmt))).info
    assert plain.get("dpi", (72, 72))[0] != pytest.approx(300)


def test_a_print_recipe_is_read_from_the_config(tmp_path):
    from daemon_helpers import STYLES
    from pipeline.daemon.config import load
    from test_daemon_parts import problems_of

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nmax_size: 8192\nrecipes:\n  poster:\n    styles: [starry_night.jpg]\n"
                    "    size: 8192\n    print_dpi: 300\n    max_memory: 20GiB\n    scales: auto\n"
                    "  flat: {styles: [starry_night.jpg], scales: 1}\n")
    recipes = load(path).recipes
    assert (recipes["poster"].settings.print_dpi, recipes["poster"].settings.max_memory) == (300, "20GiB")
    assert recipes["poster"].settings.scales == "auto" and recipes["flat"].settings.scales == 1
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  a:\n    styles: [starry_night.jpg]\n    scales: many\n"
                    "    max_memory: lots\n")
    assert problems_of(path) == ["config.yaml:5: recipes.a.scales: must be a whole number or one of auto "
                                 "(got 'many')",
                                 "config.yaml:6: recipes.a.max_memory: cannot read 'lots' as a size; write e.g. "
                                 "20GiB, 512MiB or 8GB"]


def test_status_line_and_bar_show_the_level_and_tiles():
    from pipeline.daemon.status import one_line
    from pipeline.engine.optimize import StepInfo
    from pipeline.progress import _describe

    current = {"file": "a.jpg", "step": 3, "total_steps": 10, "eta_seconds": 4, "scale": 2, "n_scales": 4, "tiles": 9}
    counts = {"queue": 0, "done": 1, "failed": 0}
    assert one_line({"current": current, **counts}).startswith("styling a.jpg step 3/10 (level 2/4, 9 tiles) ETA 4s")
    small = {**current, "n_scales": 1, "tiles": 1}
    assert one_line({"current": small, **counts}).startswith("styling a.jpg step 3/10 ETA 4s")
    info = StepInfo(3, 10, 2, 4, (1024, 2048), 1.5, 1, 1, 0, 2.0, 4.0, tiles=9)
    assert _describe(info) == "scale 2/4 2048x1024 in 9 tiles loss 1.5"
