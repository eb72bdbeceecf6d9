"""A sidecar's (or recipe's) `style_strength` wins over the raw `style_weight` a lower layer wrote (rev9a #3).

Before the fix:

README: a sidecar may override `style_strength`; `style_weight:` "sets the raw value" and overrides style_strength
(Settings.resolved_style_weight). The daemon merges a sidecar onto the recipe's Settings (config_schema
recipe_settings: recipe.settings.replace(**overrides)), so the recipe's raw style_weight still wins over the
per-photo style_strength the sidecar asked for: the photo is styled exactly as without its sidecar, no word is
said, and the JSON log records the sidecar's style_strength (8.0) beside the unchanged resolved style_weight.
Now the layer that sets style_strength without style_weight clears the inherited raw weight (Settings.overlaid).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from daemon_helpers import ROOT, SAMPLES, make_config
from pipeline.daemon.config import load
from pipeline.daemon.config_build import load_sidecar
from pipeline.engine.settings import STYLE_WEIGHT_AT_STRENGTH_1


def test_a_sidecars_style_strength_changes_the_look_under_a_recipe_style_weight(tmp_path):
    config = make_config(tmp_path, defaults={"size": 48, "steps": 8, "seed": 1},
                         recipes={"starry": {"styles": ["starry_night.jpg"], "style_weight": 1e-5}})
    inbox = tmp_path / "inbox"
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "plain.jpg")
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "strong.jpg")
    (inbox / "strong.yaml").write_text("style_strength: 8\n")
    subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT, timeout=300,
                   capture_output=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    out = tmp_path / "outbox" / "starry"
    plain = np.asarray(Image.open(out / "plain.png"), dtype=float)
    strong = np.asarray(Image.open(out / "strong.png"), dtype=float)
    log = json.loads((out / "strong.json").read_text())["settings"]
    diff = np.abs(plain - strong).mean()
    print(f"mean |diff| plain vs style_strength 8: {diff:.3f}; logged style_strength {log['style_strength']}, "
          f"style_weight {log['style_weight']}")
    assert diff > 1.0, ("the sidecar's style_strength 8 left the photo exactly as without it (recipe style_weight "
                        f"wins), while its log says style_strength {log['style_strength']}")
    assert log["style_strength"] == 8 and log["style_weight"] > 4 * 1e-5, f"the log shows the weight used: {log}"


def test_each_layer_that_sets_style_strength_clears_the_raw_weight_it_inherits(tmp_path):
    """defaults -> recipe -> sidecar: a recipe's style_strength beats defaults' style_weight; a sidecar's beats the
    recipe's; a layer writing both keeps its own raw weight; a layer writing neither keeps what it inherited."""
    config = load(make_config(tmp_path, defaults={"style_weight": 3e-5},
                              recipes={"strong": {"styles": ["starry_night.jpg"], "style_strength": 2},
                                       "raw": {"styles": ["starry_night.jpg"], "style_weight": 7e-5},
                                       "both": {"styles": ["starry_night.jpg"], "style_weight": 5e-6,
                                                "style_strength": 4}}))
    caffe = STYLE_WEIGHT_AT_STRENGTH_1["caffe"]
    strong, raw, both = (config.recipes[name].settings for name in ("strong", "raw", "both"))
    assert strong.style_weight is None and strong.resolved_style_weight("caffe") == 2 * caffe
    assert raw.style_weight == 7e-5 and both.style_weight == 5e-6
    (tmp_path / "inbox" / "a.yaml").write_text("style_strength: 0.5\n")
    _, overrides = load_sidecar(tmp_path / "inbox" / "a.yaml", config)
    assert config.recipe_settings(config.recipes["raw"], overrides).resolved_style_weight("caffe") == 0.5 * caffe
    assert config.recipe_settings(config.recipes["raw"], {"seed": 3}).style_weight == 7e-5
