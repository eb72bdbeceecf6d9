"""YAML as people write it (rev9c): a key written twice is refused at both lines, in config.yaml and in a sidecar,
and `1e-5` is the number README writes, in both too: one loader reads them all (daemon/yaml_loader.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from daemon_helpers import SAMPLES, errors, make_config
from pipeline.daemon.config import ConfigError, load
from pipeline.daemon.config_build import load_sidecar

pytestmark = pytest.mark.usefixtures("torch_threads")


def test_validate_refuses_a_recipe_written_twice_naming_both_lines(tmp_path):
    """PyYAML kept the last silently: a recipe block copied to make a new one and not yet renamed replaced the
    first, validate said OK, and every photo in inbox/scream/ was styled with the copy's painting."""
    config = make_config(tmp_path)
    text = config.read_text().replace("recipes:\n", "recipes:\n  scream:\n    styles: [starry_night.jpg]\n", 1)
    config.write_text(text)
    first = text.splitlines().index("  scream:") + 1
    second = text.splitlines().index("  scream:", first) + 1
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0, f"validate passed a config with two 'scream' recipes:\n{said}"
    assert (f"config.yaml:{second}: recipes.scream: written twice (first at line {first}); YAML keeps only the "
            "last: remove or rename one") in said, said


def test_a_sidecar_with_a_key_written_twice_is_refused_naming_both_lines(tmp_path):
    """`recipe: scream` then `recipe: starry` styled with starry without a word; now a bad_sidecar naming both."""
    config = load(make_config(tmp_path))
    sidecar = tmp_path / "inbox" / "beach.yaml"
    sidecar.write_text("recipe: scream\nsize: 32\nrecipe: starry\n")
    with pytest.raises(ConfigError) as info:
        load_sidecar(sidecar, config)
    assert info.value.problems == ["beach.yaml:3: recipe: written twice (first at line 1); YAML keeps only the "
                                   "last: remove or rename one"]


def test_merge_keys_and_aliases_are_no_key_written_twice(tmp_path):
    """`<<: *base` then an overriding key is YAML's own override, and an alias reached twice is one mapping."""
    config = make_config(tmp_path)
    text = config.read_text().replace("recipes:\n", "recipes:\n  base: &base\n    styles: [starry_night.jpg]\n"
                                      "    size: 32\n  again:\n    <<: *base\n    size: 48\n  copy: *base\n", 1)
    config.write_text(text)
    recipes = load(config).recipes
    assert recipes["again"].settings.size == 48 and recipes["copy"].settings.size == 32


def test_style_weight_written_as_the_readme_writes_it_is_a_number_in_the_config(tmp_path):
    """YAML 1.1 read `1e-5` as text (its floats want a dot: 1.0e-5): refused, "must be a number (got '1e-5')"."""
    config = make_config(tmp_path)
    config.write_text(config.read_text().replace("  size: 32\n", "  size: 32\n  style_weight: 1e-5\n  tv_weight: 1e0\n", 1))
    settings = load(config).recipes["starry"].settings
    assert settings.style_weight == pytest.approx(1e-5) and settings.tv_weight == 1.0
    quoted = _sidecar(tmp_path, "a.yaml", "style_weight: '1e-5'\n")  # quoted: text, as the person asked
    with pytest.raises(ConfigError, match="must be a number"):
        load_sidecar(quoted, load(config))


def _sidecar(folder, name: str, text: str):
    path = folder / "inbox" / name
    path.write_text(text)
    return path


def test_a_sidecars_style_weight_written_as_the_readme_writes_it_is_used(tmp_path, engine):
    """The photo failed as bad_sidecar with "style_weight: must be a number (got '1e-5')": the user wrote one."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "beach.jpg")
    _sidecar(tmp_path, "beach.yaml", "style_weight: 1e-5\n")
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert errors(tmp_path) == {}, errors(tmp_path)
    log = json.loads((tmp_path / "outbox" / "starry" / "beach.json").read_text())
    assert log["settings"]["style_weight"] == pytest.approx(1e-5)


def test_infinity_and_nan_are_refused_naming_the_file_line_and_key(tmp_path):
    """rev9f: YAML 1.2's floats read `1e400` as infinity, and `.nan` is YAML's own: both passed every range check
    (nan compares false with every bound), so `settle_seconds: 1e400` passed validate. Config and sidecar alike."""
    config = make_config(tmp_path)
    text = config.read_text()
    config.write_text(text.replace("settle_seconds: 0.3\n", "settle_seconds: 1e400\nprogress_seconds: .nan\n", 1)
                      .replace("  size: 32\n", "  size: 32\n  content_weight: .inf\n", 1))
    with pytest.raises(ConfigError) as refused:
        load(config)
    said = "\n".join(refused.value.problems)
    assert "settle_seconds: must be a finite number (got inf)" in said, said
    assert "progress_seconds: must be a finite number (got nan)" in said, said
    assert "defaults.content_weight: must be a finite number (got inf)" in said and "config.yaml:" in said, said
    config.write_text(text)
    sidecar = _sidecar(tmp_path, "a.yaml", "style_strength: .nan\n")
    with pytest.raises(ConfigError, match=r"a.yaml:1: style_strength: must be a finite number \(got nan\)"):
        load_sidecar(sidecar, load(config))
