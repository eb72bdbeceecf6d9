"""A run's checkpoint: what it must match to be resumed (its fingerprint), what it holds, its writing and reading.

Out of transfer.py, which holds the run itself (and its 400-line bound): here is the one place that says what a
checkpoint is. A run here is transfer._Run: ``content``, ``styles``, ``settings``, ``engine``, ``monitor``,
``level_index``, ``retries``, ``level_lrs``, ``tiles`` and ``checkpoint`` (the path).
"""
from __future__ import annotations

import hashlib
import io
import json

import torch

from ..fsio import sweep_temps, write_atomic
from . import shapes
from .images import digest
from .settings import DEFAULT_MAX_PIXELS, OUTPUT_ONLY
from .tiles import TilePlan


OLD_DEFAULT_MAX_PIXELS = 50_000_000  # max_pixels' default when checkpoints still held it (before 2026-11-29)


def fingerprints(run) -> tuple[str, ...]:
    """(the fingerprint a checkpoint is saved with, then those older checkpoints were saved with). It holds each
    painting's working shape per level (_paintings): a thin picture's painting was sized three ways in turn (the
    padded canvas's shape; cc339fc, raised to the picture's aspect; rev10c, the picture's own shape padded to the
    canvas), and a checkpoint saved under one resumed against another's Grams (mend10c). The older ones, which lack
    that shape, are accepted only where the painting was sized alike then (no level thinner than the network
    reads): the settings alone, and before that with the output-only settings in. Why: a print in flight when the
    daemon was upgraded resumes rather than start over (its checkpoint's fingerprint held print_dpi, format,
    quality and max_pixels). That upgrade raised max_pixels' default from 50 to 200 MP, so a config that never set
    it (the shipped one) wrote the old default into the old fingerprint: that one is accepted too (rev7g finding 3:
    such a print started over)."""
    images = [digest(run.content), *map(digest, run.styles)]
    settings = run.settings.identity()
    identity = {**settings, "paintings": _paintings(run, lambda hw: hw)}
    before = {**settings, **{k: getattr(run.settings, k) for k in OUTPUT_ONLY}}
    olds = [settings, before] if _paintings(run, shapes.canvas) == identity["paintings"] else []
    if olds and run.settings.max_pixels == DEFAULT_MAX_PIXELS:
        olds.append({**before, "max_pixels": OLD_DEFAULT_MAX_PIXELS})

    def made(of: dict) -> str:
        parts = [*images, json.dumps(of, sort_keys=True), run.engine.weights.sha256]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    return (made(identity), *map(made, olds))


def _paintings(run, sized) -> list[list[list[int]]]:
    """Each level's paintings' working shapes, made for the picture shape ``sized(level)`` (the level itself, as
    now; its padded canvas, as before cc339fc): [h, w], and the canvas it is padded to where thinner than the
    network reads, [h, w, H, W]. A thicker painting's entry is [h, w] as it was, so its checkpoints still resume."""
    scale = run.settings.style_scale
    return [[_entry(run.engine.painting_hw(style, sized(hw), scale)) for style in run.styles] for hw in run.levels]


def _entry(hw: tuple[int, int]) -> list[int]:
    """One painting's entry: its shape, then its canvas where padded (rev10c's sizing, told from cc339fc's)."""
    outer = shapes.canvas(hw)
    return [*hw] if outer == tuple(hw) else [*hw, *outer]


def save(run, pixels: torch.Tensor, opt_state: dict) -> None:
    """Atomically: a kill during the write leaves the previous checkpoint whole."""
    m = run.monitor
    state = {"fingerprint": run.fingerprints[0], "level": run.level_index, "level_step": m.level_step,
             "step": m.step_count, "pixels": pixels.detach().float().cpu().contiguous(),
             "optimizer": opt_state, "curve": m.curve, "elapsed": m.elapsed,
             "retries": run.retries, "level_lrs": run.level_lrs, "tiles": {k: p.to_dict() for k, p in run.tiles.items()},
             "history": list(m.history)}  # the early stop's window: a resumed level stops where it would have
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(buffer.getvalue(), run.checkpoint)


def resume(run) -> tuple[torch.Tensor | None, int, dict | None, int | None]:
    """(pixels, level index, optimiser state, step) from the run's checkpoint, the monitor set to go on from it;
    (None, 0, None, None) where there is none to resume: missing, unreadable or another run's (start over rather
    than fail the job)."""
    if run.checkpoint:  # before this run's first write: a temp a killed write left beside it (rev7b: gigabytes)
        sweep_temps(run.checkpoint.parent, run.checkpoint.name)
    if not (run.checkpoint and run.checkpoint.is_file()):
        return None, 0, None, None
    try:
        state = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
    except Exception:
        return None, 0, None, None
    if state.get("fingerprint") not in run.fingerprints:
        return None, 0, None, None
    m = run.monitor
    m.step_count, m.level_step, m.curve = state["step"], state["level_step"], state["curve"]
    m.saved_at = state["step"]
    m.elapsed_before = state["elapsed"]
    if m.work:
        m.work.resumed(state["level"], state["level_step"], state["step"])
    m.history[:] = [tuple(entry) for entry in state.get("history", [])]  # none in a checkpoint before rev7b
    run.retries = list(state.get("retries", []))
    run.level_lrs = list(state.get("level_lrs", run.level_lrs))  # a retried coarse level's step (rev9g #3)
    run.tiles = {int(k): TilePlan.from_dict(p) for k, p in state.get("tiles", {}).items()}  # the same cut
    return state["pixels"].to(run.engine.device), state["level"], state["optimizer"], state["step"]
