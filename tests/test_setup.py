"""Issue 13, the set-up between a batch's "job started" and its first step: a batch uses the working copies made
ahead (the H200's batches at 1024 px resized every photo in the slot: ~65 ms a photo of the 447 ms), and the
first step tells the set-up by part, so a daemon log splits it. Real weights, tiny photos, one torch thread."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs

from daemon_helpers import make_config, outputs, wait_for
from pipeline.daemon import config as config_module
from pipeline.daemon.pool import Pool
from pipeline.daemon.spool import Spool
from pipeline.daemon.config_build import check_folders
from pipeline.engine import Settings, images
from pipeline.engine.prepared import prepare

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples"
SETTINGS = Settings(size=40, steps=3, early_stop_tol=0)
BATCH_PARTS = ["runs", "copy", "style", "content", "state", "first_step"]
LONE_PARTS = ["run", "copy", "style", "content", "first_step"]

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.fixture(scope="module")
def photos():
    """coffee and rocket: one working shape at 40 px (40x27), two different photos."""
    return [images.load(SAMPLES / f"{name}.jpg") for name in ("coffee", "rocket", "coffee")]


@pytest.fixture
def resizes(monkeypatch, photos):
    """(thread name) of each resize of a photo from its original size (images.resize_once, the one way)."""
    found, real, sizes = [], images.resize_once, {p.size for p in photos}

    def counted(img, hw):
        if img.size in sizes:
            found.append(threading.current_thread().name)
        return real(img, hw)
    monkeypatch.setattr(images, "resize_once", counted)
    return found


def test_a_batch_of_photos_prepared_ahead_resizes_none_and_gives_the_same_results(engine, style, photos, resizes):
    ahead = [prepare(p, SETTINGS) for p in photos]
    resizes.clear()
    batched = engine.stylize_batch(ahead, [style], SETTINGS)
    assert resizes == [], "the copies made ahead were used"
    plain = engine.stylize_batch(photos, [style], SETTINGS)
    assert len(resizes) == 3, "made in the run without them"
    for a, b in zip(batched, plain):
        assert a.losses == b.losses and a.image.tobytes() == b.image.tobytes()


def test_the_first_step_tells_the_set_up_by_part_and_no_later_step_does(engine, style, photos):
    told: list = []
    engine.stylize_batch(photos, [style], SETTINGS, on_step=lambda i, info: told.append((i, info.step, info.setup)))
    first = [setup for _, step, setup in told if step == 1]
    assert len(first) == 3 and all(list(s) == BATCH_PARTS for s in first), first
    assert first[0]["runs"] == first[1]["runs"] and first[0]["state"] == first[2]["state"], "one batch, one set-up"
    assert all(setup is None for _, step, setup in told if step > 1)
    alone: list = []
    engine.stylize(photos[0], [style], SETTINGS, on_step=lambda info: alone.append(info.setup))
    assert list(alone[0]) == LONE_PARTS and all(v >= 0 for v in alone[0].values()) and alone[1:] == [None, None]


def test_a_pool_batch_runs_the_copies_made_ahead_and_its_log_splits_the_set_up(tmp_path, engine, resizes,
                                                                              monkeypatch):
    """batch: 3 in the pool: no photo is resized in the slot (all in the prefetch thread); the three records that
    say "not running" once the batch is done are written side by side, not one fsync after another in the slot, and
    so are the extras' tries begun (their records saying running);
    "job started" says how long the slot took to open the batch, each photo's first progress line has the set-up's
    parts."""
    saves, real_save = [], Spool.save
    monkeypatch.setattr(Spool, "save", lambda self, job: saves.append((threading.current_thread().name,
                                                                       job.running)) or real_save(self, job))
    config = config_module.load(make_config(tmp_path, batch=3, defaults={"size": 40, "steps": 2, "format": "png",
                                                                         "early_stop_tol": 0}))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    jobs = []
    for name, sample in {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg", "c.jpg": "coffee.jpg"}.items():
        shutil.copy(SAMPLES / sample, config.inbox / name)
        jobs.append(spool.claim(config.inbox / name, "2026-01-01T00:00:00Z", None))
    pool = Pool([engine], spool, lambda: config, threading.Event())
    with capture_logs() as logs:
        for job in jobs:
            pool.submit(job)
        pool.start()
        wait_for(lambda: pool.progress().open_jobs == 0, 60)
        pool.close(10)
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "b.png", "c.png"]
    started = [e for e in logs if e["event"] == "job started"]
    assert [e.get("batch") for e in started] == [3, 3, 3] and all(e["opened_ms"] >= 0 for e in started)
    assert resizes and "worker-0" not in resizes, resizes
    done_saves = [thread.rsplit("_", 1)[0] for thread, running in saves if not running]
    assert done_saves.count("records") == 3 and "worker-0" not in done_saves, saves
    begun = [thread.rsplit("_", 1)[0] for thread, running in saves if running]
    # a's try begun in hand; its two extras' side by side, with a's record marked batched beside them (rev6f B4)
    assert begun == ["worker-0", "open", "open", "open"], begun
    firsts = [e for e in logs if e["event"] == "progress" and e["step"] == 1]
    assert len(firsts) == 3 and all(list(e["setup_ms"]) == BATCH_PARTS for e in firsts), firsts
    assert not any("setup_ms" in e for e in logs if e["event"] == "progress" and e["step"] > 1)


def test_a_batch_is_judged_in_one_pass_with_the_losses_each_photo_gets_alone(engine, style, photos):
    """The closing judged each photo of a batch with a pass and four host reads of its own, one after another;
    now one batched pass. Each photo's judged loss is still its own saved picture's under its own objective."""
    engine.stylize_batch(photos, [style], SETTINGS)  # the style's targets cached
    passes, last_step = [0], []
    handle = engine.vgg.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    try:
        results = engine.stylize_batch(photos, [style], SETTINGS, on_step=lambda i, info: last_step.append(passes[0]))
    finally:
        handle.remove()
    assert passes[0] - last_step[-1] == 1, "one judged pass for the three photos"
    for photo, result in zip(photos, results):
        problem, _ = engine.build_loss(photo, [style], SETTINGS)
        with torch.no_grad():
            total, parts = problem.loss(images.to_tensor(result.image))
        assert result.losses["total"] == pytest.approx(float(total), rel=1e-5)
        assert [result.losses[k] for k in ("content", "style", "tv")] == pytest.approx(parts.tolist(), rel=1e-5)


def test_a_batch_whose_judged_pass_fails_keeps_its_results_and_judges_each_photo_alone(engine, style, photos,
                                                                                      monkeypatch):
    """Review finding: the batched judged pass caught out-of-memory only, so any other error there (a kernel error
    at a batch size the steps never used) lost every result the batch had made. Now each photo is judged alone."""
    from pipeline.engine.losses import TotalLoss

    per_image, failed = TotalLoss.per_image, []

    def breaks_when_judging_a_batch(self, pixels):  # the steps (with a gradient) and each photo's own judging pass
        if not torch.is_grad_enabled() and pixels.shape[0] > 1:
            failed.append(pixels.shape[0])
            raise RuntimeError("CUDNN_STATUS_INTERNAL_ERROR (a stand-in)")
        return per_image(self, pixels)
    monkeypatch.setattr(TotalLoss, "per_image", breaks_when_judging_a_batch)
    results = engine.stylize_batch(photos, [style], SETTINGS)
    assert failed == [len(photos)], "the batched judged pass ran, and failed"
    assert len(results) == len(photos) and all(r.image is not None for r in results)
    monkeypatch.setattr(TotalLoss, "per_image", per_image)
    for photo, result in zip(photos, results):
        problem, _ = engine.build_loss(photo, [style], SETTINGS)
        with torch.no_grad():
            total, _parts = problem.loss(images.to_tensor(result.image))
        assert result.losses["total"] == pytest.approx(float(total), rel=1e-5)


@pytest.fixture
def no_grad_passes(engine):
    """The batch size of each network pass without a gradient (content targets, the style's Grams, the closing
    judged pass), and the count of all passes, as each happens."""
    found: dict[str, list] = {"no grad": [], "all": [0]}

    def seen(_module, inputs, _output):
        found["all"][0] += 1
        if not torch.is_grad_enabled():
            found["no grad"].append(inputs[0].shape[0])
    handle = engine.vgg.register_forward_hook(seen)
    yield found
    handle.remove()


@pytest.mark.parametrize("scales, size", [(1, 40), (2, 96)])
def test_a_batch_makes_its_photos_content_targets_in_one_pass_a_level(engine, style, photos, no_grad_passes, scales,
                                                                       size):
    """Each photo of a batch made its content target with a forward of its own, one after another, before the
    batch's first step (on the H200 part of a batch of 7's 447 ms set-up); now one forward of the batch a level,
    and each photo still gets what it gets alone (within 1% of the loss)."""
    settings = Settings(size=size, steps=3, early_stop_tol=0, scales=scales, coarse_steps=2, log_every=1)
    engine.stylize_batch(photos, [style], settings)  # the style's Grams cached at each level's shape
    no_grad_passes["no grad"].clear()
    no_grad_passes["all"][0] = 0
    at_first_step: list = []
    results = engine.stylize_batch(photos, [style], settings, on_step=lambda i, info: at_first_step.append(
        (list(no_grad_passes["no grad"]), no_grad_passes["all"][0])) if info.step == 1 else None)
    assert at_first_step[0] == ([3], 1 + 2), "one content forward of 3 photos, then the first step's 2 evaluations"
    assert no_grad_passes["no grad"] == [3] * scales + [3], "one content forward a level, one judged pass"
    for photo, result in zip(photos, results):
        alone = engine.stylize(photo, [style], settings)
        assert len(result.scales) == scales and result.steps == alone.steps == 3 + 2 * (scales - 1)
        assert result.losses["total"] == pytest.approx(alone.losses["total"], rel=0.01)


def test_a_batchs_content_targets_are_each_photos_own(engine, style, photos):
    """The batched forward's targets equal, to float error, the one each photo's lone run makes (build_loss)."""
    from pipeline.engine.content_target import content_targets
    from pipeline.engine.transfer import _Run

    runs = [_Run(engine, photo, [style], SETTINGS, None, None, None) for photo in photos]
    hw = runs[0].levels[-1]
    batched = content_targets(engine, [run.content_at(hw, engine.device) for run in runs])
    for photo, target in zip(photos, batched):
        problem, _ = engine.build_loss(photo, [style], SETTINGS)
        own = problem.loss.content.target
        assert target.shape == own.shape and own.shape[:2] == (1, 512)
        assert torch.allclose(target, own, rtol=1e-4, atol=1e-4 * float(own.abs().max()))
    assert not torch.allclose(batched[0], batched[1]), "two different photos"


def test_a_batch_whose_level_is_tiled_never_makes_the_whole_content_targets(engine, style, photos, no_grad_passes):
    """A level too large for the memory budget is tiled: its content targets are made tile by tile, each photo
    alone; the batch's shared forward is made only when a run asks for it, after that decision, so no whole
    (untiled) forward of the batch is made."""
    settings = Settings(size=64, steps=2, early_stop_tol=0, max_memory="1MB")
    results = engine.stylize_batch(photos[:2], [style], settings)
    assert all(r.image is not None for r in results)
    assert 2 not in no_grad_passes["no grad"], no_grad_passes["no grad"]


def test_a_run_uses_an_rgb_photo_as_it_is_and_converts_any_other(engine, style, photos):
    """A batch's runs were 124 ms of a batch of 12 on the H200 (setup_ms "runs"): each run copied its RGB photo
    (PIL's convert to its own mode), 2-13 ms a 2400x1655 photo (bench/setup_parts.py --only runs). Now an RGB
    photo is used as it is, never changed; a photo in another mode is still converted, and the result is the same."""
    from pipeline.engine.transfer import _Run

    rgb = photos[0]
    run = _Run(engine, prepare(rgb, SETTINGS), [style], SETTINGS, None, None, None)
    assert run.content is rgb and run.original_content is rgb
    grey = rgb.convert("L")
    assert _Run(engine, grey, [style], SETTINGS, None, None, None).content.mode == "RGB"
    before = rgb.tobytes()
    engine.stylize(rgb, [style], SETTINGS)
    assert rgb.tobytes() == before and rgb.mode == "RGB"
