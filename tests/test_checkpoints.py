"""Issue 13: a checkpoint waits for both its steps and its seconds, so that on a GPU it costs next to nothing.

On an H200 the checkpoint every 25 steps (0.5 GB of pixels and L-BFGS history, to the CPU, serialised, fsynced)
cost three times the photo's own 100 steps at 1024 px. The monitor's clock is passed in, so these tests drive it.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from daemon_helpers import make_config
from pipeline.daemon import config as config_module
from pipeline.engine import Settings, images
from pipeline.engine.images import digest
from pipeline.errors import Cancelled
from pipeline.engine.optimize import Monitor, _Stop

PIXELS = torch.zeros(1, 3, 4, 4)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _monitor(clock: Clock, saves: list[int], total: int = 100, stop=None) -> Monitor:
    monitor = Monitor(total, 1, 1000, 0.0, 1, should_stop=stop, checkpoint_every=25, checkpoint_seconds=30.0,
                      clock=clock)
    monitor.save = lambda pixels, state: saves.append(monitor.step_count)
    return monitor


def _steps(monitor: Monitor, clock: Clock, seconds_each: float, count: int) -> None:
    for _ in range(count):
        clock.now += seconds_each
        monitor.step_count += 1
        monitor.level_step += 1
        monitor.step(PIXELS, 1.0, [1.0, 0.0, 0.0], dict)


def test_fast_steps_wait_for_the_seconds():
    clock, saves = Clock(), []
    monitor = _monitor(clock, saves)
    _steps(monitor, clock, 0.5, 100)  # 25 steps are 12.5 s: the seconds decide
    assert saves == [60], "first at 30 s (step 60); the next would need 60 s, after the run's end"


def test_slow_steps_wait_for_the_steps_and_the_last_step_writes_none():
    clock, saves = Clock(), []
    monitor = _monitor(clock, saves)
    _steps(monitor, clock, 2.0, 100)  # 30 s are 15 steps: the steps decide
    assert saves == [25, 50, 75], "not at step 100: the run's result is written next"


def test_the_seconds_count_from_the_run_start_not_the_first_step():
    clock, saves = Clock(), []
    monitor = _monitor(clock, saves)
    clock.now += 40.0  # the run's setup (targets, a cold cache) before its first step
    _steps(monitor, clock, 0.1, 30)
    assert saves == [25]


def test_a_cancel_saves_whatever_the_clock():
    clock, saves = Clock(), []
    monitor = _monitor(clock, saves, stop=lambda: monitor.step_count >= 3)
    with pytest.raises(_Stop):
        _steps(monitor, clock, 0.01, 3)
    assert saves == [3] and monitor.cancelled


def test_a_short_run_writes_no_checkpoint_by_default_and_one_with_seconds_0(engine, content, style, tmp_path,
                                                                               torch_threads):
    """The engine end to end: at the defaults a run of a few seconds leaves no checkpoint behind (it used to write
    one every 25 steps); checkpoint_seconds 0 goes back to steps alone, and the last step still writes none."""
    settings = Settings(size=32, steps=12, checkpoint_every=5, early_stop_tol=0)
    quiet = tmp_path / "quiet.ckpt"
    engine.stylize(content, [style], settings, checkpoint=quiet)
    assert not quiet.exists()
    steps = tmp_path / "steps.ckpt"
    engine.stylize(content, [style], settings.replace(checkpoint_seconds=0), checkpoint=steps)
    assert torch.load(steps, weights_only=False)["step"] == 10, "at steps 5 and 10, not at 12, the last"


def test_the_config_takes_checkpoint_seconds_like_checkpoint_every(tmp_path):
    path = make_config(tmp_path, defaults={"checkpoint_seconds": 0, "checkpoint_every": 5},
                       recipes={"starry": {"styles": ["starry_night.jpg"], "checkpoint_seconds": 12.5}})
    config = config_module.load(path)
    assert config.recipes["starry"].settings.checkpoint_seconds == 12.5
    assert config.recipes["scream"].settings.checkpoint_seconds == 0
    assert Settings().checkpoint_seconds == 30.0
    for bad, message in ((-1, "checkpoint_seconds must be >= 0"), ("soon", "checkpoint_seconds")):
        with pytest.raises(config_module.ConfigError, match=message):
            config_module.load(make_config(tmp_path / str(bad), defaults={"checkpoint_seconds": bad}))


@pytest.mark.parametrize("changed", [dict(checkpoint_every=25, checkpoint_seconds=30.0),
                                     dict(compile=True, cudnn_benchmark=True),
                                     dict(print_dpi=300.0, format="jpeg", quality=80, max_pixels=10_000)],
                         ids=["cadence", "speed settings", "output settings"])
def test_a_checkpoint_resumes_under_another_cadence_or_output(engine, content, style, tmp_path, changed):
    """How often checkpoints are written shapes no pixel: a print in flight resumes after the cadence changed
    (an upgrade that added checkpoint_seconds would otherwise have restarted every one); nor do the speed-only
    compile and cudnn_benchmark (engine/speed.py), nor the output-only print_dpi, format, quality and max_pixels
    (rev7b: a recipe's print_dpi edited, or the CLI's -o print.png rerun as -o print.jpg, restarted a killed print
    from step 0). Two levels: the checkpoint is the fine level's, as a print's would be."""
    checkpoint = tmp_path / "run.ckpt"
    settings = Settings(size=64, steps=3, scales=2, coarse_steps=2, optimizer="adam", log_every=1,
                        checkpoint_every=1, checkpoint_seconds=0, early_stop_tol=0)
    _cancel_at(engine, content, style, settings, checkpoint, 3)
    assert torch.load(checkpoint, weights_only=False)["level"] == 1
    later = settings.replace(**changed)
    assert later.identity() == settings.identity()
    assert engine.stylize(content, [style], later, checkpoint=checkpoint).resumed_from_step == 3


@pytest.mark.parametrize("change", [dict(print_dpi=300.0), dict(format="webp"), dict(quality=80),
                                    dict(max_pixels=10_000), dict(size=48), dict(seed=1)])
def test_each_output_setting_alone_leaves_the_identity_and_a_pixel_setting_does_not(change):
    """Each output-only setting alone keeps the fingerprint's settings; one that shapes pixels (size, seed) does
    not, so the exclusion is no blanket."""
    same = Settings().replace(**change).identity() == Settings().identity()
    assert same == (next(iter(change)) in ("print_dpi", "format", "quality", "max_pixels"))


def test_a_checkpoint_from_before_the_output_settings_left_its_fingerprint_resumes(engine, content, style,
                                                                                     tmp_path):
    """A print in flight when the daemon is upgraded: its checkpoint's fingerprint was made the old way (with
    print_dpi, format, quality and max_pixels in it); it resumes, not start over. The old way is written out here."""
    checkpoint = tmp_path / "run.ckpt"
    settings = Settings(size=40, steps=4, optimizer="adam", log_every=1, checkpoint_every=1, checkpoint_seconds=0,
                        early_stop_tol=0, print_dpi=300.0)
    _cancel_at(engine, content, style, settings, checkpoint, 2)
    old_identity = {k: v for k, v in settings.to_dict().items()
                    if k not in ("checkpoint_every", "checkpoint_seconds", "cudnn_benchmark", "compile")}
    parts = [digest(content.convert("RGB")), digest(style), json.dumps(old_identity, sort_keys=True),
             engine.weights.sha256]
    state = torch.load(checkpoint, weights_only=False)
    state["fingerprint"] = hashlib.sha256("|".join(parts).encode()).hexdigest()
    torch.save(state, checkpoint)
    assert engine.stylize(content, [style], settings, checkpoint=checkpoint).resumed_from_step == 2
    # the same upgrade raised max_pixels' default from 50 to 200 MP: a config that never set it wrote 50 MP into
    # the old fingerprint, and such a print started over (rev7g finding 3, found with the real 4b30ce9 writing it)
    checkpoint.unlink()  # the resumed run above finished: a new cancelled one writes it afresh
    _cancel_at(engine, content, style, settings, checkpoint, 2)
    state = torch.load(checkpoint, weights_only=False)
    parts[2] = json.dumps({**old_identity, "max_pixels": 50_000_000}, sort_keys=True)
    state["fingerprint"] = hashlib.sha256("|".join(parts).encode()).hexdigest()
    torch.save(state, checkpoint)
    assert engine.stylize(content, [style], settings, checkpoint=checkpoint).resumed_from_step == 2
    state["fingerprint"] = hashlib.sha256("|".join(parts[:-1] + ["other weights"]).encode()).hexdigest()
    torch.save(state, checkpoint)
    assert engine.stylize(content, [style], settings, checkpoint=checkpoint).resumed_from_step is None


def _cancel_at(engine, content, style, settings: Settings, checkpoint, step: int) -> None:
    seen: list[int] = []
    with pytest.raises(Cancelled):
        engine.stylize(content, [style], settings, checkpoint=checkpoint, on_step=lambda info: seen.append(info.step),
                       should_stop=lambda: seen[-1] >= step)


def test_a_resumed_run_early_stops_where_the_uninterrupted_one_did(engine, content, style, tmp_path):
    """README: a resumed run 'ends on exactly the same pixels as the uninterrupted run'. With early stop on, the
    early stop reads the loss of the last window of steps: the checkpoint holds it and the resumed level starts from
    it (rev7b: it was cleared, and a run killed within a window of its stop ran on: 22 steps became 25). A checkpoint
    without it (written before) still resumes, to the steps' end or its own early stop."""
    # style_weight 1e-5 raw: the balance this run early-stops under within 60 steps; style_strength 1's weight at
    # 48 px is 69x that since rev9a #2 (size-aware), and Adam then still gains 3% per window at step 60
    settings = Settings(size=48, steps=60, scales=1, optimizer="adam", log_every=1, early_stop_tol=0.03,
                        early_stop_window=4, checkpoint_every=1, checkpoint_seconds=0, style_weight=1e-5)
    full = engine.stylize(content, [style], settings)
    assert full.stop_reason == "early_stop" and full.steps < 60, (full.stop_reason, full.steps)
    checkpoint = tmp_path / "run.ckpt"
    _cancel_at(engine, content, style, settings, checkpoint, full.steps - 2)
    state = torch.load(checkpoint, weights_only=False)
    resumed = engine.stylize(content, [style], settings, checkpoint=checkpoint)
    assert resumed.resumed_from_step == full.steps - 2
    assert (resumed.steps, resumed.stop_reason) == (full.steps, "early_stop")
    assert torch.equal(images.to_tensor(resumed.image, "cpu"), images.to_tensor(full.image, "cpu"))
    del state["history"]
    torch.save(state, checkpoint)
    older = engine.stylize(content, [style], settings, checkpoint=checkpoint)
    assert older.resumed_from_step == full.steps - 2 and older.steps > full.steps


def _pre_painting_fingerprint(engine, content, style, settings: Settings) -> str:
    """A fingerprint made as before mend10c: the settings, the pictures and the weights, but not how the painting
    was sized."""
    parts = [digest(content.convert("RGB")), digest(style), json.dumps(settings.identity(), sort_keys=True),
             engine.weights.sha256]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _raised(hw: tuple[int, int]) -> tuple[int, int]:
    """cc339fc's shapes.raised: ``hw`` scaled up, its aspect kept, until its short side is 16 px."""
    grow = 16 / min(hw)
    return hw if grow <= 1 else (max(16, round(hw[0] * grow)), max(16, round(hw[1] * grow)))


@pytest.mark.parametrize("then", ["canvas", "cc339fc"])
def test_a_thin_pictures_checkpoint_whose_painting_was_sized_otherwise_starts_over(engine, content, style, tmp_path,
                                                                                  monkeypatch, then):
    """A thin picture's painting was sized three ways in turn: at the padded canvas (stretched along the short
    side), then at cc339fc's raised shape (its aspect kept, its strokes up to 4x the method's scale: rev10c), now at
    the picture's own shape padded to the canvas. A checkpoint saved under an earlier sizing resumed against other
    Grams (mend10c): the fingerprint holds each painting's working shape per level, so it starts from step 0; one
    sized alike resumes, and a picture thick enough that its painting never changed resumes from a checkpoint made
    before the shape was recorded."""
    from pipeline.engine import shapes
    from pipeline.engine.transfer import StyleTransfer

    strip = content.convert("RGB").crop((0, 0, content.width, content.width // 20))  # 20:1, thin at 96 px
    settings = Settings(size=96, steps=4, scales=1, optimizer="adam", log_every=1, checkpoint_every=1,
                        checkpoint_seconds=0, early_stop_tol=0)
    checkpoint = tmp_path / "run.ckpt"
    sized = {"canvas": shapes.canvas, "cc339fc": _raised}[then]
    with monkeypatch.context() as as_then:  # the painting sized as then (style_scale 1: the picture's shape)
        as_then.setattr(StyleTransfer, "painting_hw", staticmethod(lambda painting, hw, scale: sized(hw)))
        _cancel_at(engine, strip, style, settings, checkpoint, 2)
    assert engine.stylize(strip, [style], settings, checkpoint=checkpoint).resumed_from_step is None
    checkpoint.unlink(missing_ok=True)
    _cancel_at(engine, strip, style, settings, checkpoint, 2)
    assert engine.stylize(strip, [style], settings, checkpoint=checkpoint).resumed_from_step == 2
    for picture, resumes in ((strip, None), (content, 2)):  # a checkpoint saved before the shape was recorded
        checkpoint.unlink(missing_ok=True)
        _cancel_at(engine, picture, style, settings, checkpoint, 2)
        state = torch.load(checkpoint, weights_only=False)
        state["fingerprint"] = _pre_painting_fingerprint(engine, picture, style, settings)
        torch.save(state, checkpoint)
        assert engine.stylize(picture, [style], settings, checkpoint=checkpoint).resumed_from_step == resumes
