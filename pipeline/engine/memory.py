"""The one memory model of a run, its calibration, and the tile plan it allows (issue 14): untiled whenever it fits.

A run's peak is its loss pass (VGG19 to conv5_1, forward and backward), about BYTES_PER_PIXEL for each pixel the
network sees, plus the whole-picture vectors the optimiser keeps (state_bytes). Both are known before the run, so
the plan is made up front: the largest tile whose pass fits what is left of the budget after the whole-picture
state. The GPU batch size (engine/batch.py, issue 13) divides free memory by the same model (photo_bytes), so the
planner and the batcher cannot disagree about what one photo costs.

Calibration (the figures behind the constants):
- CPU (bench/RESULTS.md, PRINT; ``python -m bench.print --evaluate 384 512``, 2-core box): the RSS high-water
  mark of one loss evaluation with its backward, 1.03 GiB at 384 px and 1.36 GiB at 512 px, grows by 3.09 KB per
  pixel (fp32, 2 threads; 2.56 KB with 1 thread). 1024 px untiled: 3.29 GiB.
- GPU (shared/notes/gpu.md, H200, tf32, the default recipe: L-BFGS with 20 pairs, a 960x662 photo upscaled):
  peak 0.65 / 2.25 / 8.68 GiB at 512x353 / 1024x706 / 2048x1412 px, 3.86 / 3.34 / 3.22 KB per pixel in all and
  3.17-3.18 KB per extra pixel; less the L-BFGS state (0.62 KB/px here), the pass holds about 2.6 KB/px.
- So the CPU's 3.1 KB/px, the larger, plans both: photo_bytes (3,684 B/px with the state) predicts 0.62 / 2.48 /
  9.92 GiB for those GPU runs (0.954 / 1.10 / 1.14x the measured peaks; at 512 px the network's weights, ~50 MB
  and fixed, are the rest). The batcher used 4.1 KB/px and the planner 3.1 KB/px plus the state before they
  shared this model.
- bf16 autocast stores half-size activations: 1.8 KB/px, an estimate (not measured on its own).
"""
from __future__ import annotations

import math

import torch

from .settings import Settings, parse_bytes
from .tiles import ALIGN, TilePlan

BYTES_PER_PIXEL = {"fp32": 3100, "bf16": 1800}  # the loss pass, per pixel the network sees (calibration above)
WHOLE_PICTURE_BYTES = 4 * 3  # one fp32 RGB vector per pixel
CONTENT_TARGET_BYTES = 4 * 512 // 64  # conv4_2: 512 channels at 1/8 x 1/8
CPU_SHARE = 0.5  # of the memory available when the run starts: the box has other work (a daemon, a desktop)
GPU_SHARE = 0.9  # of the free device memory: the allocator's fragmentation needs some room
MIN_CORE = 2 * ALIGN
MIN_HISTORY = 3

def available_bytes(device: torch.device) -> int:
    """What this run may use when max_memory is not set: a share of free GPU memory, or of available RAM."""
    if device.type == "cuda":
        return int(cuda_free(device) * GPU_SHARE)
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(int(info["MemAvailable"].split()[0]) * 1024 * CPU_SHARE)
    except (OSError, KeyError, ValueError):
        return 8 << 30  # no /proc (macOS): a laptop-sized guess


def budget(max_memory: str | None, device: torch.device) -> int:
    """The bytes a run plans for: max_memory when set (never more than a GPU has free), else the default share."""
    if max_memory is None:
        return available_bytes(device)
    asked = parse_bytes(max_memory)
    if device.type == "cuda":
        return min(asked, cuda_free(device))
    return asked


def cuda_free(device: torch.device) -> int:
    """Free device memory, within the process's cap where one is set (set_per_process_memory_fraction: how a
    24 GB card is emulated on a bigger one, or a GPU shared by two daemons): mem_get_info alone ignores the cap.
    What this process's allocator holds cached but unused counts as free: it is reused (and, at the cap, given
    back and retried). Counted as taken, a print's previous level's cache shrank the next level's budget (H200:
    the 2048 px level of an auto print tiled at 9.9 GiB under a 20 GiB cap; a single 2048 px run fits whole)."""
    index = torch.cuda.current_device() if device.index is None else device.index  # the cap's query wants an index
    free, total = torch.cuda.mem_get_info(index)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _index: 1.0)(index)
    held = torch.cuda.memory_allocated(index)
    cached = torch.cuda.memory_reserved(index) - held  # this process's own freed blocks: its allocator reuses them
    return max(0, min(free + cached, int(total * fraction) - held))


def state_bytes(pixels: int, optimizer: str, history: int) -> int:
    """The whole-picture vectors a run keeps: pixels, gradient, the optimiser's state, the content target."""
    vectors = {"lbfgs": 2 * history + 6, "lbfgsb": 4 * history + 12, "adam": 6}.get(optimizer, 2 * history + 6)
    return pixels * (vectors * WHOLE_PICTURE_BYTES + CONTENT_TARGET_BYTES)


def photo_bytes(hw: tuple[int, int], optimizer: str = "lbfgs", history: int = Settings.lbfgs_history,
                precision: str = "fp32") -> int:
    """One photo's peak, untiled: its loss pass and its whole-picture state. The GPU batch size is the free
    memory over it; the planner tiles a picture when it exceeds the budget."""
    return pass_bytes(hw, precision) + state_bytes(hw[0] * hw[1], optimizer, history)


def pass_bytes(hw: tuple[int, int], precision: str) -> int:
    """One loss pass's activations at ``hw``, without any state: what a pyramid term holds (pyramid.py)."""
    return hw[0] * hw[1] * _pass_bytes(precision)


def _pass_bytes(precision: str) -> int:
    return BYTES_PER_PIXEL["bf16" if precision == "bf16" else "fp32"]


def plan(hw: tuple[int, int], budget_bytes: int, *, halo: int, optimizer: str, history: int,
         precision: str, stateless: bool = False) -> TilePlan | None:
    """None when the whole picture's loss pass fits; else the largest core (a multiple of 16) whose tiles'
    pass does. A budget too small even for the smallest tile still gets it: the run is slow, but it ends.
    ``stateless``: a pass with no optimiser of its own (a pyramid term: pyramid.py), its pass alone."""
    if stateless:
        return None if pass_bytes(hw, precision) <= budget_bytes else _cut(hw, budget_bytes, halo, precision, None)
    if photo_bytes(hw, optimizer, history, precision) <= budget_bytes:
        return None
    kept = history_within(hw[0] * hw[1], budget_bytes // 2, optimizer, history)
    left = budget_bytes - state_bytes(hw[0] * hw[1], optimizer, kept)
    return _cut(hw, left, halo, precision, kept if kept < history and optimizer != "adam" else None)


def _cut(hw: tuple[int, int], left: int, halo: int, precision: str, capped: int | None) -> TilePlan:
    """The largest core whose tile's pass fits in ``left`` bytes."""
    per_pixel = _pass_bytes(precision)
    for core in range(ALIGN * math.ceil(max(hw) / ALIGN) - ALIGN, MIN_CORE - 1, -ALIGN):
        side = core + 2 * halo  # a middle tile's; thin pictures' tiles are cut by their short side
        if min(side, hw[0]) * min(side, hw[1]) * per_pixel <= left:
            return TilePlan((hw[0], hw[1]), core, halo, capped)
    return TilePlan((hw[0], hw[1]), MIN_CORE, halo, capped)


def history_within(pixels: int, room: int, optimizer: str, history: int) -> int:
    """The L-BFGS memory whose whole-picture pairs fit in ``room`` (at least MIN_HISTORY): at 8192 px one pair
    is 1.6 GB, so 20 pairs (32 GB) cannot fit a 20 GiB budget however small the tiles."""
    while history > MIN_HISTORY and state_bytes(pixels, optimizer, history) > room:
        history -= 1
    return history
