"""A recipe's per-style `weight`s are the engine's style_blend (rev7a finding 1).

config_build kept each `{path, weight}` in StyleRef.weight, which only the JSON log read: the engine was given the
recipe's Settings with style_blend () (= equal weights), so the shipped `blend` recipe (70/30) and every weighted
recipe styled its photos as a 50/50 blend while its log claimed otherwise.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from daemon_helpers import ROOT, SAMPLES, STYLES, make_config
from pipeline.daemon.config import load
from test_daemon_parts import problems_of


def _once(config):
    subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT, timeout=300,
                   capture_output=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_weights_one_and_zero_give_the_first_painting_not_the_even_blend(tmp_path):
    """A real `once` night: the painting of weight 0 has no part in the look, so the photo comes out as with the
    first painting alone (same seed), and away from the 50/50 blend (before the fix: identical to it, 1.01 away
    from the first painting alone)."""
    recipes = {"alone": {"styles": ["starry_night.jpg"]},
               "weighted": {"styles": [{"path": "starry_night.jpg", "weight": 1.0},
                                       {"path": "the_scream.jpg", "weight": 0.0}]},
               "even": {"styles": ["starry_night.jpg", "the_scream.jpg"]}}
    config = make_config(tmp_path, recipes=recipes, default_recipe="alone",
                         defaults={"size": 48, "steps": 8, "seed": 1})
    for name in recipes:
        (tmp_path / "inbox" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / name / "rocket.jpg")
    _once(config)
    pixels = {name: np.asarray(Image.open(tmp_path / "outbox" / name / "rocket.png"), dtype=float) for name in recipes}
    to_alone = np.abs(pixels["weighted"] - pixels["alone"]).mean()
    to_even = np.abs(pixels["weighted"] - pixels["even"]).mean()
    assert to_alone < 0.5 * to_even, f"mean |diff| to the first painting alone {to_alone:.3f}, to 50/50 {to_even:.3f}"
    log = json.loads((tmp_path / "outbox" / "weighted" / "rocket.json").read_text())
    assert [s["weight"] for s in log["styles"]] == [1.0, 0.0]
    assert log["settings"]["style_blend"] == [1.0, 0.0], "the log names the blend the engine was given"


def _config(tmp_path, recipe: str):
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  blend:\n{recipe}")
    return path


def test_the_shipped_blend_recipe_is_70_30():
    assert load(ROOT / "config.yaml").recipes["blend"].settings.style_blend == (0.7, 0.3)


def test_a_style_without_weight_counts_one(tmp_path):
    path = _config(tmp_path, "    styles: [{path: starry_night.jpg, weight: 3}, the_scream.jpg]\n")
    assert load(path).recipes["blend"].settings.style_blend == (3.0, 1.0)


def test_weights_and_style_blend_together_are_refused_at_the_line(tmp_path):
    path = _config(tmp_path, "    styles: [{path: starry_night.jpg, weight: 0.7}, {path: the_scream.jpg, weight: 0.3}]\n"
                             "    style_blend: [1, 1]\n")
    assert problems_of(path) == [
        "config.yaml:5: recipes.blend.style_blend: the styles have their own `weight`s; give the weights once: "
        "either `weight:` in each style or `style_blend:`, not both"]


def test_every_weight_zero_is_refused(tmp_path):
    path = _config(tmp_path, "    styles: [{path: starry_night.jpg, weight: 0}, {path: the_scream.jpg, weight: 0}]\n")
    assert problems_of(path) == [
        "config.yaml:4: recipes.blend.styles: every style has weight 0; give at least one a weight above 0"]


def test_a_recipes_own_weights_win_over_a_style_blend_in_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\ndefaults: {{style_blend: [1, 1]}}\nrecipes:\n  blend:\n"
                    "    styles: [{path: starry_night.jpg, weight: 0.7}, {path: the_scream.jpg, weight: 0.3}]\n")
    assert load(path).recipes["blend"].settings.style_blend == (0.7, 0.3)
