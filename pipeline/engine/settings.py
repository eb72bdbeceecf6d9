"""Engine settings: one frozen dataclass, the single place where every default lives.

The CLI flags and the daemon's config schema are both derived from :class:`Settings`,
so a default is never written twice.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import SettingsError

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"

# The notebook's balance is content_weight 1, style_weight 1e6 on torchvision's normalised input.
# On the original (Caffe) weights with 0-255 input, features are far larger and the Gram term grows
# with their 4th power: 1e-5 gives the notebook's look there (first measured at 192 px with L-BFGS).
# These are the weights AT CALIBRATION_SIDE, the notebook's 400 px. The founding style term (Gram sums over
# positions, divided by C*H*W once) grows with the pixel count while the content term (a mean) does not, so one
# fixed weight weighed the painting ~4x more per doubling of the size (rev9a #2: weighted style/content 0.15 at
# 64 px, 0.48 at 128, 2.23 at 256). ``style_strength`` 1.0 means "the notebook's balance" at every size of a given
# shape and whatever weights are loaded: resolved_style_weight scales these by (CALIBRATION_SIDE / the level's long
# side)^2. The LONG SIDE, not the pixel count (the lead's decision on rev9g #2): 1.0 stays exactly the notebook's
# weight at its 400 px for every aspect, and, as in the notebook, a wider picture of the same long side has a
# lighter style term (16:9 ~0.56x a square's, 4:1 ~0.25x; README "Balance"). A raw style_weight is the founding
# formula's, unscaled.
STYLE_WEIGHT_AT_STRENGTH_1 = {"caffe": 1e-5, "torchvision": 1e6}
CALIBRATION_SIDE = 400  # the notebook's max side: where style_strength 1 is exactly the weights above
ADAM_DEFAULT_LR = 2.0  # Settings.lr 0: Adam's step in 0-255 pixel units


CHECKPOINT_CADENCE = ("checkpoint_every", "checkpoint_seconds")  # not part of Settings.identity()
SPEED_ONLY = ("cudnn_benchmark", "compile")  # nor these: how fast a GPU computes, not what (engine/speed.py)
# Nor these: read only after the run (the file's encoding and dpi) or before it (the decode guard, which refuses a
# photo rather than change it); the engine's run never reads them (rev7b).
OUTPUT_ONLY = ("print_dpi", "format", "quality", "max_pixels")
DEFAULT_MAX_PIXELS = 200_000_000  # Settings.max_pixels; images.load's default too
DEFAULT_QUALITY = 92  # Settings.quality; images.encode's default too
# The largest side a run may ask for: JPEG's own limit (65,500 px), a 5.5 m print at 300 dpi. Unbounded,
# `--size 99999999999999999999` was taken and planned a 58-level pyramid before anything said no (closing9);
# config.yaml's max_size (the daemon's own, lower guard) cannot be raised past it either.
MAX_SIZE = 65_500
# The output formats, once (rev7e finding 4: four tables had to agree): name -> (PIL's format, the file suffixes, the
# first being the one the daemon writes). images.encode, outputs.image_name, the CLI's -o and validate derive theirs.
OUTPUT_FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg", ".jpeg"), "webp": ("WEBP", ".webp")}
# A format that holds less than MAX_SIZE a side (libwebp: 16,383 px; PNG's own is 2^31-1): a size over it ran the
# whole optimisation and failed only at the save, its night's work lost (mend10c). Refused up front (validate).
FORMAT_MAX_SIDE = {"webp": ("WebP", 16_383)}
FORMAT_NAMES = ", ".join(list(OUTPUT_FORMATS)[:-1]) + f" or {list(OUTPUT_FORMATS)[-1]}"  # "png, jpeg or webp"


@dataclass(frozen=True)
class Settings:
    """Everything that decides the pixels of one run (plus output encoding)."""

    size: int = 256
    """Longest side of the result, in pixels."""
    steps: int = 150
    """Optimizer iterations (L-BFGS iterations or Adam steps) at the final scale; but under scales: auto with
    coarse_steps unset, a print above 1024 px (several levels) gives them to its coarsest level and each finer level
    half the one before (at least 20): 2048 px, steps 300 runs 300, 150, 75."""
    optimizer: Literal["lbfgs", "lbfgsb", "adam"] = "lbfgs"
    """lbfgs: projected L-BFGS in torch (the default); lbfgsb: scipy's L-BFGS-B (reference); adam."""
    lr: float = 0.0
    """Adam step in 0-255 pixel units; 0 means the optimizer's default (Adam: 2.0)."""
    init: Literal["content", "noise", "style"] = "content"
    """The starting picture: content (the photo), noise (seeded), or style (the painting, resized)."""
    seed: int = 0
    """Random seed (for noise init); the same seed and device give the same pixels."""
    style_strength: float = 1.0
    """1.0 = the reference notebook's balance, at every size of a given shape: the style_weight used is 1e-5 x strength (Caffe
    weights; torchvision's 1e6) x (400 / the level's long side)^2, exactly the notebook's at its 400 px."""
    style_weight: float | None = None
    """Raw style weight, the founding formula's as written at every size (not scaled); overrides style_strength."""
    content_weight: float = 1.0
    """Weight of the content (conv4_2) term; style_strength sets the style side of the balance."""
    tv_weight: float = 0.0
    """Total-variation weight, relative to the content term at 0-255 scale."""
    layer_weights: tuple[float, ...] = (1.0, 0.8, 0.5, 0.3, 0.1)
    """Weights of conv1_1, conv2_1, conv3_1, conv4_1, conv5_1."""
    style_scale: float = 1.0
    """Style image size relative to the content's; 1.0 = resized to the content's shape (the notebook)."""
    style_blend: tuple[float, ...] = ()
    """Blend weights for several styles; empty means equal."""
    preserve_color: bool = False
    """Transfer luminance only and keep the content's colours (Gatys et al. 2016, luminance-only)."""
    scales: int | Literal["auto"] = "auto"
    """Pyramid levels, coarse to fine, each twice the previous size; 1 = single scale; auto = one level up to
    1024 px, above that levels from a coarse one of 385-768 px (a panorama: from the coarsest whose short side is
    at least 32 px; see engine/levels.py)."""
    coarse_steps: int | None = None
    """Iterations at each coarser pyramid level, the final one getting steps; unset = 100 with a number of scales,
    and auto's own rule under scales: auto (see steps); set, auto's levels take it too. The JSON log's level_steps
    says what each level got."""
    keep_in_range: bool = True
    """Keep pixels in 0-255 during the optimisation (clamping only at the end costs up to ~25% loss)."""
    early_stop_tol: float = 1e-3
    """Stop when the loss improved by less than this fraction over ``early_stop_window`` steps; 0 = off."""
    early_stop_window: int = 20
    """Steps over which early_stop_tol is measured."""
    lbfgs_history: int = 20
    """L-BFGS memory: how many past steps shape the next direction."""
    log_every: int = 10
    """Record the loss curve every k steps (also the only host syncs for Adam)."""
    checkpoint_every: int = 25
    """Write the checkpoint (when one is given) at most every k steps (and see checkpoint_seconds)."""
    checkpoint_seconds: float = 30.0
    """...and only once this many seconds have passed since the last one (or the run's start); never at the run's
    last step; a cancel always writes one. A crash loses at most about this much work, or checkpoint_every steps
    where those take longer (a slow CPU: 25 steps as before). Why: on an H200 a checkpoint
    at 1024 px (pixels and the L-BFGS history, 0.5 GB, to the CPU, serialised, fsynced) stalled the worker 1.0-1.4 s,
    four times in a photo whose 100 steps cost 1.3 s; at 30 s even a 1 s checkpoint costs at most 3% of a run, and
    a photo of under 30 s writes none. 0 = by steps alone."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; a missing device is an error, not a fallback."""
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"
    """auto: what `style-pipeline precision --probe` measured and recorded for this device, else tf32 on CUDA and
    fp32 elsewhere (engine/precision.py); tf32: TF32 matmuls (CUDA; fp32 elsewhere); bf16: bfloat16 autocast."""
    cudnn_benchmark: bool = False  # on an H200 its search cost 3.5-4.9 s per new shape and batch (engine/speed.py)
    """CUDA: cuDNN times its convolution algorithms once per new shape and batch and keeps the fastest
    (torch.backends.cudnn.benchmark, process-wide, set as each run starts: engine/speed.py); false = its heuristics'
    pick. No effect elsewhere. Speed only: a checkpoint resumes whatever it is."""
    compile: bool = False
    """CUDA: torch.compile the VGG network for the optimiser's passes (dynamic=False: each shape and batch compiles
    once, at its first pass, and is reused by the engine's later runs); a no-op elsewhere, which the job log
    records. Off until measured on a GPU (bench/conv_speed.py). Speed only: a checkpoint resumes whatever it is."""
    max_memory: str | None = None
    """Memory the run may plan for, e.g. 20GiB; unset = 90% of free GPU memory, or half the available RAM.
    A loss pass over a bigger picture is evaluated in tiles, with the same result."""
    print_dpi: float | None = None
    """Written into the output file's dpi (a print's size on paper); unset = none written."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Refuse inputs with more pixels than this (decompression-bomb guard; 200 MP takes a phone's 200 MP mode and
    a 150 MP medium-format camera; a 151 MP photo peaks at 1.7-2.3 GB while loaded: bench/big_photo_memory.py)."""
    format: Literal["png", "jpeg", "webp"] = "png"
    """Output encoding; the CLI takes it from the output file's extension."""
    quality: int = DEFAULT_QUALITY
    """JPEG and WebP quality, 1-100."""

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def overlaid(self, changes: dict[str, Any]) -> "Settings":
        """These settings under a more specific layer's ``changes`` (defaults < recipe < sidecar). A layer that sets
        style_strength without style_weight clears the raw style_weight it inherits: style_weight beats
        style_strength within one layer, so a recipe's `style_weight` made a sidecar's `style_strength: 8` do
        nothing, silently, while its log recorded 8 (rev9a #3). The more specific layer wins."""
        if "style_strength" in changes and "style_weight" not in changes:
            changes = {**changes, "style_weight": None}
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed: all but those that shape no pixel: how often
        checkpoints are written, the speed-only cudnn_benchmark and compile, and the output-only print_dpi, format,
        quality and max_pixels. With the cadence in it, a checkpoint_seconds added by an upgrade (or a changed
        checkpoint_every) made every print in flight start over; with the output ones, a recipe's print_dpi
        edited, or the CLI's `-o print.png` rerun as `-o print.jpg`, restarted a killed print from step 0."""
        return {k: v for k, v in self.to_dict().items() if k not in CHECKPOINT_CADENCE + SPEED_ONLY + OUTPUT_ONLY}

    def resolved_style_weight(self, weights_kind: str, long_side: int = CALIBRATION_SIDE) -> float:
        """The style weight of a level whose working picture's long side is ``long_side``: a raw style_weight as
        written; else style_strength's, scaled by (CALIBRATION_SIDE / long_side)^2 so that the style/content
        balance is the same at every size of a given shape (the style term grows with the pixel count, the content term does not;
        see STYLE_WEIGHT_AT_STRENGTH_1)."""
        if self.style_weight is not None:
            return self.style_weight
        return self.style_strength * STYLE_WEIGHT_AT_STRENGTH_1[weights_kind] * (CALIBRATION_SIDE / long_side) ** 2

    def blend_problem(self, n_styles: int) -> str | None:
        """What is wrong with style_blend for ``n_styles`` paintings, or None. The one copy of "one weight per
        painting", shared by config_build (a recipe), the CLI's pre-check and the engine: the CLI lacked it, so
        `stylize photo.jpg starry.jpg --style-blend 0.7 0.3` loaded torch and VGG (11.6 s) before the engine
        refused it with a bare ValueError (rev9d)."""
        if self.style_blend and len(self.style_blend) != n_styles:
            return f"has {len(self.style_blend)} weights for {n_styles} style{'' if n_styles == 1 else 's'}"
        return None

    def check_blend(self, n_styles: int) -> None:
        """Raise SettingsError when style_blend does not give one weight per painting (see blend_problem)."""
        if problem := self.blend_problem(n_styles):
            raise SettingsError("style_blend", f"style_blend {problem}",
                                fix="Give one style_blend weight per style, in their order, or none for equal weights")

    def resolved_lr(self, gentle: bool = False) -> float:
        """The step an Adam run takes: lr, or ADAM_DEFAULT_LR where lr is 0; halved for the gentle retry after a
        NaN. One rule for the optimiser and for the JSON log, which recorded the 0.0 it was given (rev9a #5)."""
        return (self.lr or ADAM_DEFAULT_LR) * (0.5 if gentle else 1.0)

    def validate(self) -> None:
        """Raise SettingsError naming the setting and what to fix."""
        checks = [
            ("size", self.size >= 16, "size must be at least 16 px"),
            ("size", self.size <= MAX_SIZE, f"size {self.size} is over the largest the engine makes, {MAX_SIZE} px "
             "on the long side (JPEG's limit; a 5.5 m print at 300 dpi)"),
            ("steps", self.steps >= 0, "steps must be >= 0"),
            ("optimizer", self.optimizer in ("lbfgs", "lbfgsb", "adam"), "optimizer must be lbfgs, lbfgsb or adam"),
            ("init", self.init in ("content", "noise", "style"), "init must be content, noise or style"),
            ("lr", self.lr >= 0, "lr must be >= 0"),
            ("style_strength", self.style_strength >= 0, "style_strength must be >= 0"),
            ("style_weight", self.style_weight is None or self.style_weight >= 0, "style_weight must be >= 0"),
            ("content_weight", self.content_weight >= 0, "content_weight must be >= 0"),
            ("tv_weight", self.tv_weight >= 0, "tv_weight must be >= 0"),
            ("layer_weights", len(self.layer_weights) == len(STYLE_LAYERS),
             f"layer_weights needs {len(STYLE_LAYERS)} values"),
            ("layer_weights", all(w >= 0 for w in self.layer_weights), "layer_weights must be >= 0"),
            ("style_scale", 0.05 <= self.style_scale <= 8, "style_scale must be within 0.05..8"),
            ("style_blend", all(w >= 0 for w in self.style_blend), "style_blend weights must be >= 0"),
            ("style_blend", not self.style_blend or sum(self.style_blend) > 0, "style_blend needs a weight above 0"),
            ("scales", self.scales == "auto" or (isinstance(self.scales, int) and 1 <= self.scales <= 6),
             "scales must be auto or within 1..6"),
            ("max_memory", self.max_memory is None or _bytes_or_none(self.max_memory) is not None,
             _size_hint(self.max_memory)),
            ("print_dpi", self.print_dpi is None or 1 <= self.print_dpi <= 10_000, "print_dpi must be within 1..10000"),
            ("coarse_steps", self.coarse_steps is None or self.coarse_steps >= 0, "coarse_steps must be >= 0"),
            ("early_stop_tol", self.early_stop_tol >= 0, "early_stop_tol must be >= 0"),
            ("early_stop_window", self.early_stop_window >= 1, "early_stop_window must be >= 1"),
            ("lbfgs_history", self.lbfgs_history >= 1, "lbfgs_history must be >= 1"),
            ("log_every", self.log_every >= 1, "log_every must be >= 1"),
            ("checkpoint_every", self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            ("checkpoint_seconds", self.checkpoint_seconds >= 0, "checkpoint_seconds must be >= 0"),
            ("cudnn_benchmark", isinstance(self.cudnn_benchmark, bool), "cudnn_benchmark must be true or false"),
            ("compile", isinstance(self.compile, bool), "compile must be true or false"),
            ("precision", self.precision in ("auto", "fp32", "tf32", "bf16"),
             "precision must be auto, fp32, tf32 or bf16"),
            ("format", self.format in OUTPUT_FORMATS, f"format must be {FORMAT_NAMES}"),
            ("quality", 1 <= self.quality <= 100, "quality must be within 1..100"),
            ("max_pixels", self.max_pixels >= 256, "max_pixels must be >= 256"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise SettingsError(name, message)
        self._check_format_side()

    def _check_format_side(self) -> None:
        """The output's long side (``size``: fit scales to it, up or down) fits its format. The fix is in the
        message too: config.yaml's problems show the message alone."""
        name, limit = FORMAT_MAX_SIDE.get(self.format, (self.format, MAX_SIZE))
        if self.size > limit:
            fix = f"Give a size of at most {limit}, or write PNG (up to {MAX_SIZE} px)"
            raise SettingsError("size", f"size {self.size} is over {name}'s limit of {limit} px a side; "
                                f"{fix[0].lower()}{fix[1:]}", fix=fix)


_UNITS = {"b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def _bytes_or_none(text: Any) -> int | None:
    """Bytes, or None: a unit is required and the size must be above 0. `max_memory: 20` (meant 20 GiB) was read
    as 20 bytes: the run was cut into tiny tiles, its L-BFGS history cut to 3, and its result changed (rev6b)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) or None


def _size_hint(text: Any) -> str:
    """The one wording of an unreadable max_memory (the check in validate and parse_bytes's error)."""
    if re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", str(text)):
        number = str(text).strip()
        if float(number) >= 2 ** 20:  # a count of bytes, surely: say it in the unit a person would write
            return f"{number!r} has no unit; if bytes, write {_in_units(float(number))} (or {int(float(number))}B)"
        in_bytes = f" ({number}B if bytes)" if float(number).is_integer() else ""  # no 1.5B
        return f"{number!r} has no unit ({number} bytes?); write e.g. {number}GiB or {number}MiB{in_bytes}"
    if re.fullmatch(r"\s*[0.]+\s*[a-zA-Z]+\s*", str(text)):
        return f"{text!r} is no memory at all; write e.g. 20GiB, or leave max_memory unset for the default share"
    return f"cannot read {text!r} as a size; write e.g. 20GiB, 512MiB or 8GB"


def _in_units(count: float) -> str:
    """21474836480 -> '20GiB': the largest binary unit that leaves a number of at least 1."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if count >= _UNITS[unit.lower()]:
            return f"{count / _UNITS[unit.lower()]:.2f}".rstrip("0").rstrip(".") + unit
    return f"{int(count)}B"


def parse_bytes(text: Any) -> int:
    """'20GiB', '512 MiB', '8GB', '1.5g' or '4096B' -> bytes (max_memory's spelling; a bare number is refused)."""
    found = _bytes_or_none(text)
    if found is None:
        raise SettingsError("max_memory", _size_hint(text))
    return found


def field_names() -> list[str]:
    return [f.name for f in fields(Settings)]


def field_docs() -> dict[str, str]:
    """Attribute docstrings are not kept at run time, so the CLI help reads them from the source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Settings))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[attr-defined]
    return docs


# The reference notebook's run: Adam lr 0.003 in normalised units (0.003 * 255 * ~0.226 = 0.17 in 0-255
# units), 2800 steps from the content image, style resized to the content's shape, max side 400 px,
# no clamping until the end, no early stop.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(
        optimizer="adam", lr=0.003 * 255 * 0.226, steps=2800, size=400, init="content", style_scale=1.0,
        scales=1, keep_in_range=False, early_stop_tol=0.0, tv_weight=0.0,
    ),
    "fast": dict(optimizer="lbfgs", steps=300, scales=1),
}


def preset(name: str, **overrides: Any) -> Settings:
    if name not in PRESETS:
        raise SettingsError("preset", f"unknown preset {name!r}", fix=f"Choose one of {', '.join(PRESETS)}")
    return Settings(**{**PRESETS[name], **overrides})

