"""Issue 11 item 11: `validate` binds max_size to recipes, refuses max_attempts 0, sorts by line, names the file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_helpers import ROOT, STYLES
from pipeline.daemon.config import load
from pipeline.errors import ConfigError
from test_daemon_parts import problems_of


def test_max_size_binds_defaults_and_recipes_not_only_sidecars(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"""styles_dir: {STYLES}
max_size: 2048
defaults:
  size: 64000
recipes:
  big:
    styles: [starry_night.jpg]
    size: 3000
  inherits:
    styles: [the_scream.jpg]
""")
    found = problems_of(path)
    assert found == ["config.yaml:4: defaults.size: 64000 is over max_size 2048; lower it or raise max_size",
                     "config.yaml:8: recipes.big.size: 3000 is over max_size 2048; lower it or raise max_size"]


def test_max_size_binds_the_engines_default_size_where_none_is_written(tmp_path):
    """rev7b: max_size 128 and no size anywhere styled every photo at the engine's 256 px without a word. Refused
    at max_size's line, naming the recipes and the fix; a recipe that writes its own size is not named, and a size
    written under defaults answers it."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nmax_size: 128\nrecipes:\n  a: {{styles: [starry_night.jpg]}}\n"
                    "  b: {styles: [the_scream.jpg]}\n  small: {styles: [the_scream.jpg], size: 96}\n")
    assert problems_of(path) == ["config.yaml:2: max_size: 128 is under the engine's default size 256, which recipes "
                                 "a, b use (no size written); write `size: 128` (or less) under defaults, or raise "
                                 "max_size"]
    path.write_text(path.read_text() + "defaults: {size: 128}\n")
    assert {name: r.settings.size for name, r in load(path).recipes.items()} == {"a": 128, "b": 128, "small": 96}


def test_an_absurd_max_size_and_size_are_refused_naming_the_value_and_the_limit(tmp_path):
    """closing9: max_size 99999999999999999999 with a recipe of that size passed validate, and the engine planned a
    58-level pyramid for it. Both are refused at their lines; a sidecar that large was already refused (max_size)."""
    from pipeline.daemon.config_build import load_sidecar

    huge = 99999999999999999999
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nmax_size: {huge}\nrecipes:\n  a: {{styles: [starry_night.jpg], "
                    f"size: {huge}}}\n")
    assert problems_of(path) == [
        f"config.yaml:2: max_size: {huge} is over the largest size the engine makes, 65500 px; lower it",
        f"config.yaml:4: recipes.a.size: size {huge} is over the largest the engine makes, 65500 px on the long side "
        "(JPEG's limit; a 5.5 m print at 300 dpi)"]
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  a: {{styles: [starry_night.jpg]}}\n")
    (tmp_path / "photo.yaml").write_text(f"size: {huge}\n")
    with pytest.raises(ConfigError) as refused:
        load_sidecar(tmp_path / "photo.yaml", load(path))
    assert all(str(huge) in p for p in refused.value.problems) and "65500" in refused.value.problems[0]


def test_a_size_over_its_formats_limit_is_refused_before_the_run(tmp_path):
    """mend10c: WebP holds 16,383 px a side; a WebP recipe (or a sidecar's `format: webp`) of size 20000 ran the
    whole optimisation and failed at the save. Refused at its line, naming the size, the limit and the fix."""
    from pipeline.engine.settings import Settings
    from pipeline.errors import SettingsError

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nmax_size: 20000\nrecipes:\n  a: {{styles: [starry_night.jpg], "
                    "size: 20000, format: webp}\n  b: {styles: [the_scream.jpg], size: 20000}\n")
    assert problems_of(path) == ["config.yaml:4: recipes.a.size: size 20000 is over WebP's limit of 16383 px a side; "
                                 "give a size of at most 16383, or write PNG (up to 65500 px)"]
    path.write_text(path.read_text().replace(", format: webp", ""))
    config = load(path)
    with pytest.raises(SettingsError, match="over WebP's limit") as refused:
        config.recipe_settings(config.recipes["b"], {"format": "webp"})  # a sidecar's, at pre_check_settings
    assert refused.value.fix == "Give a size of at most 16383, or write PNG (up to 65500 px)"
    Settings(size=16383, format="webp").validate()  # the limit itself is taken
    Settings(size=20000, format="jpeg").validate()


def test_a_recipe_within_max_size_passes(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nmax_size: 512\ndefaults: {{size: 512}}\n"
                    "recipes:\n  a: {styles: [starry_night.jpg], size: 256}\n")
    assert load(path).recipes["a"].settings.size == 256


@pytest.mark.parametrize("line, message", [
    ("max_attempts: 0", "max_attempts: must be >= 1 (got 0)"),
    ("max_size: 8", "max_size: must be >= 16 (got 8)"),
    ("max_crashes: 0", "max_crashes: must be >= 1 (got 0); 0 would fail every photo as crashed_daemon"),
    ("device: banana", "device: unknown device 'banana'"),
    ("device: cuda:x", "device: unknown device 'cuda:x'"),
])
def test_values_that_would_fail_every_photo_are_refused(tmp_path, line, message):
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\n{line}\nrecipes:\n  a: {{styles: [starry_night.jpg]}}\n")
    assert any(p.startswith(f"config.yaml:2: {message}") for p in problems_of(path)), problems_of(path)


def test_problems_come_in_file_order(tmp_path):
    """Unknown keys were listed first, then styles_dir, then the rest in check order."""
    path = tmp_path / "config.yaml"
    path.write_text(f"""recipes:
  a: {{styles: [nope.jpg]}}
styles_dir: {STYLES}
max_attempts: 0
defaults: {{size: big}}
settle_secnds: 2
""")
    lines = [int(p.split(":")[1]) for p in problems_of(path)]
    assert lines == sorted(lines) and len(lines) == 4, problems_of(path)


def _validate(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_footer_names_the_real_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recipes: {}\n")
    result = _validate(path)
    assert result.returncode == 2
    assert "FILE" not in result.stderr
    assert result.stderr.rstrip().endswith(f"style-pipeline validate --config {path}")


def test_a_missing_config_says_how_to_make_one(tmp_path):
    result = _validate(tmp_path / "nowhere" / "config.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No such file" in result.stderr and "FILE" not in result.stderr
    assert f"style-pipeline init {tmp_path / 'nowhere'}" in result.stderr


def test_an_unknown_key_in_a_style_entry_gets_did_you_mean(tmp_path):
    """rev7a finding 2: `{path: x.jpg, wieght: 0.3}` passed validate and the weight silently became 1."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  blend:\n    styles:\n"
                    "      - {path: starry_night.jpg, weight: 0.7}\n      - {path: the_scream.jpg, wieght: 0.3}\n")
    assert problems_of(path) == ["config.yaml:6: recipes.blend.styles.1.wieght: unknown key; did you mean 'weight'?"]
    result = _validate(path)
    assert result.returncode == 2 and "wieght: unknown key; did you mean 'weight'?" in result.stderr


def test_a_style_name_that_names_no_file_gets_a_close_name_and_where_names_are_read(tmp_path):
    """rev11b: `starry-night.jpg` said only "no such file. Check the path", with starry_night.jpg in styles_dir; a
    path written from the repository's root did not say that names are relative to styles_dir."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  a: {{styles: [starry-night.jpg]}}\n"
                    "  b: {styles: [pipeline/assets/styles/the_scream.jpg]}\n  c: {styles: [nothing_like_it.png]}\n")
    missing = "no such file. Check the path"
    assert problems_of(path) == [
        f"config.yaml:3: recipes.a.styles.0: {STYLES}/starry-night.jpg: {missing}; did you mean 'starry_night.jpg'?",
        f"config.yaml:4: recipes.b.styles.0: {STYLES}/pipeline/assets/styles/the_scream.jpg: {missing}: style names "
        f"are relative to styles_dir ({STYLES}); did you mean 'the_scream.jpg'?",
        f"config.yaml:5: recipes.c.styles.0: {STYLES}/nothing_like_it.png: {missing}"]


def test_paintings_are_checked_against_their_recipes_max_pixels(tmp_path):
    """rev7g: validate decoded the paintings under the engine's default max_pixels, the worker under the recipe's:
    a painting over its recipe's lower limit passed validate and failed every photo of that recipe all night
    (too_large). starry_night.jpg is 512x320 = 163,840 pixels; the same painting under the default passes (the
    decode cache knows the limit it passed under)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  roomy: {{styles: [starry_night.jpg]}}\n"
                    "  small:\n    max_pixels: 100000\n    styles: [the_scream.jpg, starry_night.jpg]\n")
    found = problems_of(path)
    assert len(found) == 2 and all(p.startswith("config.yaml:6: recipes.small.styles.") for p in found), found
    assert "163,840 pixels is over the limit of 100,000" in found[1] and "205,824" in found[0]
    path.write_text(path.read_text().replace("100000", "200000").replace("the_scream.jpg, ", ""))
    assert load(path).recipes["small"].settings.max_pixels == 200000


def test_two_recipes_differing_only_by_case_are_refused_naming_both_lines(tmp_path):
    """rev7g: with `Scream` and `scream` both defined, the case-blind "did you mean" for inbox/SCREAM/ named the
    last defined, and a Mac or Windows client of the share sees the two folders as one. Refused at validate, at the
    second's line naming the first's; recipes that differ by more than case pass."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  Scream: {{styles: [the_scream.jpg]}}\n"
                    "  starry: {styles: [starry_night.jpg]}\n  scream: {styles: [the_scream.jpg]}\n")
    assert problems_of(path) == ["config.yaml:5: recipes.scream: differs from the recipe 'Scream' (line 3) only by "
                                 "case; recipe names name inbox folders, which a Mac or Windows client of the share "
                                 "sees as one. Rename one of them"]
    result = _validate(path)
    assert result.returncode == 2 and "recipes.scream: differs from the recipe 'Scream' (line 3)" in result.stderr
    path.write_text(path.read_text().replace("  scream:", "  screams:"))
    assert list(load(path).recipes) == ["Scream", "starry", "screams"]


def test_a_styles_dir_that_is_the_inbox_is_refused_at_its_line(tmp_path):
    """The daemon never scans a styles_dir below the inbox for photos (rev9c); the inbox itself it cannot leave
    out, so its paintings would be claimed as photos: refused, naming the folder and what to do."""
    from daemon_helpers import make_config

    config = make_config(tmp_path, styles_dir="inbox")
    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(STYLES / name, tmp_path / "inbox" / name)
    [problem] = problems_of(config)
    assert problem.startswith("config.yaml:") and "styles_dir" in problem and "is the inbox" in problem, problem
    assert "folder of their own" in problem
    below = make_config(tmp_path / "below", styles_dir="inbox/paintings")
    (tmp_path / "below" / "inbox" / "paintings").mkdir()
    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(STYLES / name, tmp_path / "below" / "inbox" / "paintings" / name)
    assert load(below).styles_dir == (tmp_path / "below" / "inbox" / "paintings").resolve()


@pytest.mark.parametrize("name", ["reports", "Reports"])
def test_a_recipe_named_reports_is_refused(tmp_path, name):
    """rev10b #9: its outputs went to outbox/reports/, among the morning pages, where README's pruning
    (`find ... outbox/reports -type f -mtime +30 -delete`) would delete them; `Reports` is the same folder to a Mac."""
    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\nrecipes:\n  starry: {{styles: [starry_night.jpg]}}\n"
                    f"  {name}: {{styles: [the_scream.jpg]}}\n")
    assert problems_of(path) == [f"config.yaml:4: recipes.{name}: 'reports' is taken: outbox/reports/ holds the "
                                 "morning reports (and is pruned by age). Name the recipe otherwise"]
    path.write_text(path.read_text().replace(f"  {name}:", "  reportage:"))
    assert list(load(path).recipes) == ["starry", "reportage"]
