"""StyleTransfer: the one driver. It loads VGG once, caches style targets, and runs the pyramid.

Knows nothing of folders: pictures in, a :class:`Result` out.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager
from functools import cached_property, partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..errors import EngineError, SettingsError
from . import checkpoint as checkpoints, images, precision as precisions, shapes, speed, transparency
from .images import digest
from .batch import stylize_batch
from .content_target import content_targets
from .device import after_oom, pick_device
from .eta import Work, level_costs, tiled
from .levels import for_size, style_grams, tile_plan, tiled_problem
from .losses import ContentLoss, StyleLoss, StyleTargets, TotalLoss, gram
from .lbfgs import run_projected_lbfgs
from .optimize import Listener, Monitor, NonFinite, Problem, StepInfo, is_blank, run_adam, run_lbfgs
from .prepared import Prepared
from .pyramid import PyramidLoss, coarser_reserve, coarser_terms
from .result import JUDGE, Result, close  # noqa: F401  (JUDGE, Result: re-exported)
from .settings import ADAM_DEFAULT_LR, STYLE_LAYERS, Settings  # noqa: F401  (ADAM_DEFAULT_LR: re-exported)
from .tiles import TilePlan
from .shapes import MIN_SIDE, pyramid  # noqa: F401  (re-exported: callers import them from here)
from .vgg import VGGFeatures, load_features
from .walk import walk


class StyleTransfer:
    """Holds the network and a bounded style-target cache; reuse one instance for many jobs."""

    def __init__(self, weights: str | Path | None = None, device: str = "auto", cache_size: int = 32,
                 fallback_device: str = "cpu") -> None:
        started = time.perf_counter()
        self.device = pick_device(device)
        self.fallback_device = torch.device(fallback_device)
        features, self.weights = load_features(weights)
        self.vgg = VGGFeatures(features, self.weights)
        self._place(self.device)
        # Called with the run's device as each run starts; tests raise faults here (an OutOfMemoryError on a
        # machine without a GPU) to drive the recovery paths.
        self.fault_hook: Callable[[torch.device], None] | None = None
        self.cache: OrderedDict[tuple, StyleTargets] = OrderedDict()
        self.cache_size = cache_size
        self.cache_hits = self.cache_misses = 0
        self.compiled: torch.nn.Module | None = None  # the compiled VGG, made at the first run asking (speed.py)
        self.load_seconds = time.perf_counter() - started

    # --- style targets --------------------------------------------------------------------
    def style_targets(self, style: Image.Image, content_hw: tuple[int, int], settings: Settings,
                      canvas: tuple[int, int] | None = None) -> StyleTargets:
        """Gram targets of one style for a content of this shape. The painting's own Grams are cached by (pixels,
        its shape, device, precision), then brought to the content's number of positions (for_picture: a product,
        made per call, so the cache needs no content shape and serves every photo whose painting size is the same).
        ``canvas`` (default: the content's, shapes.canvas): the padded shape whose positions the loss counts."""
        hw = self.painting_hw(style, content_hw, settings.style_scale)
        own = shapes.canvas(hw)  # a thin painting is padded as its picture is (_painting_grams)
        return self._painting_grams(style, hw, settings).for_picture(own, canvas or shapes.canvas(content_hw))

    def _painting_grams(self, style: Image.Image, hw: tuple[int, int], settings: Settings) -> StyleTargets:
        """A painting's Grams at ``hw``, on its canvas (shapes.pad: only a thin one's differs), at that canvas's own
        number of positions; from the cache where it has them."""
        key = (digest(style), hw, str(self.device), self.precision(settings.precision))
        if key in self.cache:
            self.cache_hits += 1
            self.cache.move_to_end(key)
            return self.cache[key]
        self.cache_misses += 1
        self.autocast(key[3])  # CUDA's TF32 flags as keyed: a TF32 run's Grams must not serve an fp32 run (rev6b)
        pixels = shapes.pad(images.to_tensor(self._style_pixels(style, hw), self.device), shapes.canvas(hw))
        with torch.no_grad():
            grams = style_grams(self, pixels, settings)  # tiled where a large print's painting would not fit
            if grams is None:
                grams = {k: gram(v) for k, v in self.vgg(self.layout(pixels), STYLE_LAYERS).items()}
            targets = StyleTargets(grams)
        self.cache[key] = targets
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return targets

    @staticmethod
    def _style_pixels(style: Image.Image, hw: tuple[int, int]) -> Image.Image:
        """One antialiased resize from the original (issue 10): shrinking to the long side first and then
        stretching with Pillow's default filter blurred the strokes before their Grams were taken."""
        return images.resize_once(style, hw)

    @staticmethod
    def painting_hw(style: Image.Image, content_hw: tuple[int, int], scale: float) -> tuple[int, int]:
        """scale 1.0: the content's exact shape, as the notebook does, a thin one's too: padded to the canvas as the
        picture is (rev10c: raised to a 16 px short side, a 6x120 strip's painting was made at 16x320, its strokes
        2.7x the picture's scale; resized to the canvas before, stretched along the short side); else keep the
        style's aspect."""
        if scale == 1.0:
            return content_hw
        long_side = scale * max(content_hw)
        w, h = style.size
        f = long_side / max(w, h)
        return max(MIN_SIDE, round(h * f)), max(MIN_SIDE, round(w * f))

    def _place(self, device: torch.device) -> None:
        self.device = device
        layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.vgg = self.vgg.to(device, memory_format=layout)

    @contextmanager
    def _running_on(self, device: torch.device):
        """This job only on ``device``; the engine is back on its own device afterwards (issue 9: one
        out-of-memory used to move a long-lived daemon's engine to the CPU for good)."""
        home = self.device
        if device == home:
            yield
            return
        self._place(device)
        try:
            yield
        finally:
            self._place(home)

    def layout(self, pixels: torch.Tensor) -> torch.Tensor:
        """The memory layout the network runs fastest in on this device (channels-last on CUDA)."""
        return pixels.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else pixels

    def precision(self, asked: str = "auto") -> str:
        """What a run asking for ``asked`` runs in here: fp32, tf32 or bf16 (auto: as recorded for this device)."""
        return precisions.resolve(self.device, asked)

    def autocast(self, precision: str) -> torch.dtype | None:
        """The autocast dtype for ``precision`` here (None: full fp32), setting TF32 to match (engine/precision.py)."""
        return precisions.autocast(self.device, precision)

    # --- the run ----------------------------------------------------------------------------
    def stylize(self, content: Image.Image | Prepared, styles: Sequence[Image.Image],
                settings: Settings = Settings(), *,
                on_step: Callable[[StepInfo], None] | None = None, should_stop: Callable[[], bool] | None = None,
                checkpoint: str | Path | None = None, listeners: Sequence[Listener] = ()) -> Result:
        """Run the whole optimisation; on out-of-memory, retry smaller, then on the fallback device (this job
        only: the next job starts on the engine's own device again). ``listeners`` get every step's StepInfo with
        its pixels and evaluation counts, off the clock (benchmarks and tests: see optimize.Listener)."""
        settings.validate()
        if not styles:
            raise SettingsError("styles", "at least one style image is needed", fix="Give one or more paintings")
        settings.check_blend(len(styles))
        retries: list[str] = []
        device = self.device
        while True:
            try:
                with self._running_on(device):
                    run = _Run(self, content, list(styles), settings, on_step, should_stop, checkpoint)
                    for listener in listeners:
                        run.monitor.add_listener(listener)
                    result = run.run()
                result.retries = retries + result.retries
                return result
            except Exception as exc:  # out of memory (the GPU's or the host's) retries; anything else raised again
                device, settings = after_oom(self, exc, device, settings, retries)

    def stylize_batch(self, contents: Sequence[Image.Image], styles: Sequence[Image.Image],
                      settings: Settings = Settings(), **kwargs) -> list[Result]:
        """Photos of one recipe through the network together, each with its own L-BFGS (see batch.py)."""
        return stylize_batch(self, partial(_Run, self), contents, styles, settings, **kwargs)

    def build_loss(self, content: Image.Image, styles: Sequence[Image.Image], settings: Settings = Settings()
                   ) -> tuple[Problem, tuple[int, int]]:
        """The objective stylize() would minimise at its final size, and that size (height, width): for tests and
        benchmarks that drive an optimiser themselves, without reaching into a run."""
        run = _Run(self, content, list(styles), settings, None, None, None)
        return run.loss(run.levels[-1]), run.levels[-1]


class _Run:
    """One stylize() call: the state of a run in one place, so the steps read top to bottom."""

    def __init__(self, engine: StyleTransfer, content: Image.Image, styles: list[Image.Image], settings: Settings,
                 on_step, should_stop, checkpoint) -> None:
        self.created = time.perf_counter()
        self.ahead, content = (content, content.image) if isinstance(content, Prepared) else (None, content)
        self.engine, self.settings = engine, settings
        self.alpha = content.getchannel("A") if transparency.transparent(content) else None
        # An RGB photo is used as it is: PIL's convert() to the same mode copies it, 2-13 ms a 2400x1655 photo on
        # the host, on a batch's set-up path once a photo (bench/setup_parts.py --only runs). Nothing changes it.
        # One with transparency is laid on white, as a painting is: its hidden colours were styled (rev12b).
        self.content = self.original_content = transparency.as_styled(content)
        self.styles = [transparency.flatten(s) for s in styles]  # a transparent painting: on white, as it is seen
        if settings.preserve_color:
            content_y = images.luminance(self.content)
            self.styles = [images.match_luminance(images.luminance(s), content_y) for s in self.styles]
            self.content = content_y
        final_hw, self.levels, self.steps_per_level = for_size(self.content.size, settings)  # no resize: shapes
        shapes.check_thin(final_hw, self.content.size, settings.size)  # before any work: fail fast
        self.tiles: dict[int, TilePlan] = {}  # level index -> plan, made as each level starts or from a checkpoint
        # Per level: style_strength's weight is size-aware (settings.CALIBRATION_SIDE); a raw style_weight is not.
        self.style_weights = [settings.resolved_style_weight(engine.weights.kind, max(hw)) for hw in self.levels]
        self.lr = settings.resolved_lr() if settings.optimizer == "adam" else settings.lr
        # Per level, the step Adam took (a gentle retry's halved: rev9g #3, self.lr keeps only the last); [] for L-BFGS
        self.level_lrs = [self.lr] * len(self.levels) if settings.optimizer == "adam" else []
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.monitor = Monitor(sum(self.steps_per_level), len(self.levels), settings.log_every,
                               settings.early_stop_tol, settings.early_stop_window, on_step, should_stop,
                               partial(checkpoints.save, self) if self.checkpoint else None, settings.checkpoint_every,
                               settings.checkpoint_seconds)
        self.monitor.render = self.picture
        self.monitor.work = Work(list(self.steps_per_level), level_costs(self.levels, settings.scales == "auto"))
        self.level_index = 0
        self.retries: list[str] = []
        self.timings: dict[str, float] = {"style_targets": 0.0}
        self.precision = precisions.resolve(engine.device, settings.precision)  # once: the whole run in one
        self.speed = speed.prepare(engine.device, settings.cudnn_benchmark, settings.compile)  # before any conv
        # Made once per level and shared (issue 13): the content's working copy (the start pixels and the content
        # target) and the level's objective (its optimiser and the closing judged pass).
        self._content_copy: tuple = (None, None)
        self._problem: tuple = (None, None)
        self.content_targets: dict[tuple[int, int], Callable[[], torch.Tensor]] = {}  # hw -> a batch's share
        self.monitor.marks[:] = [("start", self.created)]
        self.monitor.mark("run")  # the set-up's parts, told with the first step: run, copy, style, content (issue 13)

    @property
    def style_weight(self) -> float:
        """The final level's style weight: the one its judged losses (the log's) are weighted with."""
        return self.style_weights[-1]

    def weight_at(self, hw: tuple[int, int]) -> float:
        """The style weight of the level of ``hw`` (its coarser pyramid terms take the same: their balance against
        the level's own term, PYRAMID_WEIGHT, stays as measured)."""
        return self.style_weights[self.levels.index(hw)]

    @cached_property
    def fingerprints(self) -> tuple[str, ...]:
        """What a checkpoint must match to be resumed (checkpoint.py); made only when one is saved or found (issue
        13: hashing the photo and the paintings sat before every first step)."""
        return checkpoints.fingerprints(self)

    def run(self) -> Result:
        if self.engine.fault_hook:
            self.engine.fault_hook(self.engine.device)
        torch.manual_seed(self.settings.seed)
        pixels, start, opt_state, resumed = checkpoints.resume(self)

        def optimise(index: int, runs: list, starts: list[torch.Tensor]) -> list[torch.Tensor]:
            return [self._optimise_level(self.levels[index], starts[0], opt_state if index == start else None)]

        [pixels] = walk([self], optimise, pixels, start)
        return self._result(pixels, resumed)

    def next_level(self, pixels: torch.Tensor, index: int) -> torch.Tensor:
        """The previous level's result, out of its canvas, upscaled, onto this level's canvas."""
        hw = self.levels[index]
        if tuple(pixels.shape[-2:]) == shapes.canvas(hw):
            return pixels  # resumed from a checkpoint at this level
        picture = shapes.crop(pixels, self.levels[index - 1])
        return shapes.pad(images.resize_tensor(picture, hw), shapes.canvas(hw))

    def initial(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        content = self.content_at(hw, device).clone()
        if self.settings.init == "noise":
            g = torch.Generator().manual_seed(self.settings.seed)
            return (torch.rand(content.shape, generator=g) * 255.0).to(device)
        if self.settings.init == "style":
            return self._working(self.styles[0], hw, device)
        return content

    def content_at(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The content at hw on its canvas, resized once per level (never to be changed in place)."""
        if self._content_copy[0] != (hw, device):
            ready = self.ahead.values if self.ahead and self.ahead.hw == hw else None  # made ahead (prepared.py)
            self._content_copy = ((hw, device), self._working(self.content, hw, device, values=ready))
        return self._content_copy[1]

    @staticmethod
    def _working(img: Image.Image, hw: tuple[int, int], device: torch.device,
                 values: torch.Tensor | None = None) -> torch.Tensor:
        """A picture resized once from its original to hw (or its 8-bit values at hw, made ahead), on the padded
        canvas the network sees."""
        values = images.to_bytes(images.resize_once(img, hw)) if values is None else values
        return shapes.pad(images.from_bytes(values, device), shapes.canvas(hw))

    def loss(self, hw: tuple[int, int]) -> Problem:
        """The objective at one pyramid level: content and style targets made, weights from the settings; the
        latest level's is kept, so the closing judged pass does not make its targets again."""
        if self._problem[0] == hw:
            return self._problem[1]
        problem = self._build_loss(hw)
        problem.on_evaluation = self.monitor.evaluated  # each run counts its evaluations, alone or in a batch
        self._problem = (hw, problem)
        self.monitor.mark("content")
        return problem

    def _build_loss(self, hw: tuple[int, int]) -> Problem:
        problem = self._level_loss(hw)
        index = self.levels.index(hw)
        if self.settings.scales == "auto" and index > 0:  # issue 14: keep the coarser levels' look (pyramid.py)
            problem.loss = PyramidLoss(problem.loss, coarser_terms(self.engine, self.levels[:index], self._targets,
                                                                   self.settings, self.weight_at(hw), self.precision,
                                                                   shapes.canvas(hw), self.tiles.get(index)))
        return problem

    def _targets(self, hw: tuple[int, int]) -> StyleTargets:
        """The paintings' Grams (blended) for a level of ``hw``, from the engine's cache where it has them."""
        engine, s = self.engine, self.settings
        started = time.perf_counter()
        parts = [engine.style_targets(style, hw, s, shapes.canvas(hw)) for style in self.styles]
        blend = list(s.style_blend) or [1.0] * len(parts)  # one per painting: stylize checked (check_blend)
        targets = parts[0] if len(parts) == 1 else StyleTargets.blend(parts, blend)
        self.timings["style_targets"] += time.perf_counter() - started
        return targets

    def _level_loss(self, hw: tuple[int, int]) -> Problem:
        engine, s = self.engine, self.settings
        autocast = engine.autocast(self.precision)  # CUDA's TF32 flags before the targets are made, not after (rev6b)
        targets = self._targets(hw)
        self.monitor.mark("style")  # the paintings' Grams (cached: a dict look-up) and, next, the content target
        content = self.content_at(hw, engine.device)
        index = self.levels.index(hw)
        beside = coarser_reserve(shapes.canvas(hw)) if s.scales == "auto" and index > 0 else 0
        if index not in self.tiles and (plan := tile_plan(engine, hw, s, self.precision, beside)) is not None:
            self.tiles[index] = plan
        self.monitor.tiles = self.tiles[index].count if index in self.tiles else 1
        if index in self.tiles:  # the level's step cost with its halos, for the ETA
            whole = level_costs(self.levels, s.scales == "auto")[index]
            self.monitor.work.costs[index] = tiled(whole, self.tiles[index])
        if index in self.tiles:
            return tiled_problem(engine, content, targets, s, self.weight_at(hw), self.tiles[index], self.precision)
        made = self.content_targets.pop(hw, None)  # a batch's: its photos' targets in one pass (content_target.py)
        content_target = made() if made else content_targets(engine, [content])[0]
        total = TotalLoss(speed.network(engine, s.compile), ContentLoss(content_target),
                          StyleLoss(targets, s.layer_weights), s.content_weight, self.weight_at(hw), s.tv_weight)
        return Problem(total, autocast)

    def _optimise_level(self, hw, pixels: torch.Tensor, opt_state: dict | None) -> torch.Tensor:
        """Optimise one level; on NaN/inf or a blank result, retry once from the last good state, gentler."""
        problem = self.loss(hw)
        steps = self.steps_per_level[self.level_index]
        good, good_steps = pixels.clone(), (self.monitor.step_count, self.monitor.level_step)
        for attempt in range(2):
            gentle = attempt == 1
            try:
                out = self._optimiser(problem, pixels, steps, opt_state, gentle)
                if not is_blank(out) or is_blank(good):
                    return out
                raise NonFinite("the result is blank or saturated")
            except NonFinite as exc:
                if gentle:
                    raise EngineError(f"the optimisation failed twice ({exc})",
                                      fix="Lower style_strength" + (" or lr" if self.settings.optimizer == "adam"
                                                                    else ", or use optimizer: adam")) from exc
                self.retries.append(f"{exc}; retried from step {good_steps[0]} with a smaller step")
                pixels, opt_state = good.clone(), None
                self.monitor.step_count, self.monitor.level_step = good_steps
        raise AssertionError("unreachable")

    def _optimiser(self, problem, pixels, steps, opt_state, gentle: bool) -> torch.Tensor:
        s = self.settings
        self.timings.setdefault("setup", round(time.perf_counter() - self.created, 4))  # to the first step's start
        x = self.engine.layout(pixels)
        cap = getattr(self.tiles.get(self.level_index), "history", None) or s.lbfgs_history  # a print's budget
        history = min(5 if gentle else s.lbfgs_history, cap)
        if s.optimizer == "lbfgs":  # its history is in the checkpoint: a resumed run continues exactly
            return run_projected_lbfgs(problem, x, steps, self.monitor, history=history,
                                       keep_in_range=s.keep_in_range, state=opt_state)
        if s.optimizer == "lbfgsb":
            return run_lbfgs(problem, x, steps, self.monitor, history=history, keep_in_range=s.keep_in_range)
        lr = self.lr = self.level_lrs[self.level_index] = s.resolved_lr(gentle)  # the log records each level's
        return run_adam(problem, x, steps, self.monitor, lr=lr, keep_in_range=s.keep_in_range, state=opt_state)

    def picture(self, pixels: torch.Tensor) -> Image.Image:
        """The picture these pixels would give if the run ended now (for intermediate saves)."""
        image = images.to_image(shapes.crop(pixels, self.levels[self.level_index]))  # a thin picture's canvas off
        return images.recombine_colour(image, self.original_content) if self.settings.preserve_color else image

    def _result(self, pixels: torch.Tensor, resumed: int | None) -> Result:
        return close(self, pixels, resumed)
