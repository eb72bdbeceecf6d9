"""rev6e finding 5: a photo waiting in the inbox folder of a recipe that a reload removed fails as unknown_recipe,
naming the file, the recipe and the fix; it is never styled with the default recipe without a word."""
import json
import shutil
import time

import yaml
from daemon_helpers import SAMPLES, log_events, make_config, start, stop, wait_for, wait_ready

from pipeline.daemon import config as config_module


def test_removed_recipes_are_remembered_until_restored(tmp_path):
    old = config_module.load(make_config(tmp_path))
    only_starry = config_module.dataclasses.replace(old, recipes={"starry": old.recipes["starry"]})
    removed = config_module.remember_removed_recipes(old, only_starry)
    assert removed.removed_recipes == {"scream"}
    assert config_module.remember_removed_recipes(removed, only_starry).removed_recipes == {"scream"}  # next reload
    assert config_module.remember_removed_recipes(removed, old).removed_recipes == frozenset()  # put back


def test_photo_for_a_removed_recipe_fails_as_unknown_recipe(tmp_path):
    config = make_config(tmp_path)
    proc = start(config)
    try:
        wait_ready(proc)
        data = yaml.safe_load(config.read_text())
        del data["recipes"]["scream"]
        time.sleep(1.1)  # a new mtime, whatever the file system's resolution
        config.write_text(yaml.safe_dump(data))
        wait_for(lambda: any(e.get("event") == "config reloaded" for e in log_events(proc)), 60, proc)
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "scream" / "a.jpg")
        failed = tmp_path / "spool" / "failed"
        wait_for(lambda: list(failed.rglob("*.error.json")) or list((tmp_path / "outbox").rglob("a.png")), 40, proc)
    finally:
        stop(proc)
    assert not list((tmp_path / "outbox").rglob("a.png")), "styled with another recipe"
    [error] = [json.loads(p.read_text()) for p in failed.rglob("*.error.json")]
    assert error["code"] == "unknown_recipe"
    assert "a.jpg" in error["message"] and "'scream'" in error["message"] and "removed" in error["message"]
    assert error["fix"] == "restore the recipe in config.yaml or move the photo to another recipe's folder"
    assert [p.name for p in failed.rglob("a.jpg")], "the photo is kept in failed/"


def test_removed_recipes_is_no_config_key(tmp_path):
    """The daemon keeps it; config.yaml cannot set it (the schema is derived from the Config fields)."""
    config = make_config(tmp_path)
    config.write_text(config.read_text() + "removed_recipes: [starry]\n")
    try:
        config_module.load(config)
    except config_module.ConfigError as exc:
        assert any("removed_recipes: unknown key" in p for p in exc.problems), exc.problems
    else:
        raise AssertionError("removed_recipes was accepted as a config key")


def _painting_changed_under_the_daemon(tmp_path, change) -> tuple[dict, object]:
    """The error record of a photo dropped after ``change(styles folder)`` under a running daemon."""
    from daemon_helpers import STYLES, errors

    styles = tmp_path / "styles"
    styles.mkdir()
    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(STYLES / name, styles / name)
    config = make_config(tmp_path, styles_dir=str(styles), max_attempts=2)
    proc = start(config)
    try:
        wait_ready(proc)
        change(styles)
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "beach.jpg")
        record = wait_for(lambda: errors(tmp_path).get("beach.jpg"), 60, proc)
    finally:
        stop(proc)
    assert record["code"] == "style_unreadable" and record["attempts"] == 1, record  # its own reason, not a recipe's
    assert (tmp_path / "spool" / "failed" / "beach.jpg").is_file(), "the photo is kept in failed/"
    return record, styles


def test_a_painting_renamed_while_the_daemon_runs_fails_its_photo_at_once_naming_it(tmp_path):
    """rev9c finding 8: a painting renamed under a running daemon (config.yaml unchanged, so no reload): its
    FileNotFoundError was retried as a machine fault, and each photo of the recipe failed as too_many_attempts with
    "if the machine was at fault, drop the file again", naming neither the painting nor the fix."""
    record, styles = _painting_changed_under_the_daemon(
        tmp_path, lambda styles: (styles / "starry_night.jpg").rename(styles / "Starry Night.jpg"))
    assert f"painting {styles / 'starry_night.jpg'} is no longer there" in record["message"], record
    assert record["fix"] == (f"Put starry_night.jpg back in {styles}, or name another painting in config.yaml's "
                             "recipe; then drop the photo again")


def test_a_painting_damaged_while_the_daemon_runs_is_named_not_the_photo(tmp_path):
    """rev9c (suspected, now seen): a painting replaced by a cut-short copy failed the photo as bad_image with
    "cannot decode the image ... copy it again", which named neither the painting nor which file to copy."""
    def cut(styles):
        data = (styles / "starry_night.jpg").read_bytes()
        (styles / "starry_night.jpg").write_bytes(data[: len(data) // 3])

    record, styles = _painting_changed_under_the_daemon(tmp_path, cut)
    assert record["message"].startswith(f"its recipe's painting {styles / 'starry_night.jpg'}: cannot decode"), record
    assert record["fix"].startswith(f"The painting starry_night.jpg in {styles}: the file is truncated or damaged; "
                                    "copy it again; "), record
    assert record["fix"].endswith("or name another painting in config.yaml's recipe; then drop the photo again")


def test_a_painting_whose_folder_is_gone_too_is_retried_as_the_machines_fault(tmp_path):
    """A styles share not mounted is no one's rename: the error stays a FileNotFoundError, retried, bounded."""
    import pytest

    from pipeline.daemon.prechecks import pre_check_painting
    from pipeline.errors import JobFailure

    with pytest.raises(FileNotFoundError):
        pre_check_painting(tmp_path / "unmounted" / "starry_night.jpg")
    with pytest.raises(JobFailure) as failure:
        pre_check_painting(tmp_path / "starry_night.jpg")
    assert failure.value.reason == "style_unreadable"  # its own reason: it reused unknown_recipe (closing9)
