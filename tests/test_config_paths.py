"""rev12b, a newcomer's first hour with config.yaml: `~` in the paths, advice for a config not there, and the
messages around them (each test fails without its fix)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon_helpers import SAMPLES, STYLES, make_config
from pipeline import cli
from pipeline.daemon import running
from pipeline.daemon.config import ConfigError, load, read_folders
from pipeline.daemon.config_build import check_folders, load_sidecar
from pipeline.errors import JobFailure


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    (home / "styles").mkdir(parents=True)
    shutil.copy(STYLES / "starry_night.jpg", home / "styles")
    shutil.copy(STYLES / "the_scream.jpg", home / "styles")
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_tilde_in_the_paths_is_the_home_folder(tmp_path, home):
    """`inbox: ~/inbox` validated OK and the daemon made and watched <config dir>/~/inbox (rev12b, HIGH)."""
    config = make_config(tmp_path / "install", folders={"inbox": "~/inbox", "outbox": "~/outbox", "spool": "~/spool"},
                         styles_dir="~/styles")
    loaded = load(config)
    assert (loaded.inbox, loaded.outbox, loaded.spool, loaded.styles_dir) == \
        (home / "inbox", home / "outbox", home / "spool", home / "styles")
    assert read_folders(config)["inbox"] == home / "inbox"  # status, report, install-service alike
    assert check_folders(loaded) == [] and (home / "inbox" / "starry").is_dir()
    assert not (tmp_path / "install" / "~").exists()


@pytest.mark.parametrize("written, said", [("$HOME/inbox", "$HOME is not expanded"),
                                           ("${PHOTOS}/inbox", "${PHOTOS} is not expanded"),
                                           ("~no_such_user_12f/inbox", "there is no user 'no_such_user_12f'")])
def test_a_variable_or_an_unknown_users_home_is_refused_at_its_line(tmp_path, home, written, said):
    """Not expanded into a folder of that literal name: refused, naming the key and its line."""
    config = make_config(tmp_path, folders={"inbox": written})
    with pytest.raises(ConfigError) as info:
        load(config)
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if text.strip().startswith("inbox:"))
    assert any(p.startswith(f"config.yaml:{line}: folders.inbox: {written}: {said}") for p in info.value.problems), \
        info.value.problems


def test_install_service_refuses_a_tilde_that_would_be_the_service_users_home(tmp_path, home):
    """Under systemd `~` is the service user's home: the units would name yours, the daemon its own."""
    from pipeline.daemon.config import refuse_home_paths

    config = make_config(tmp_path, folders={"outbox": "~/outbox"})
    with pytest.raises(ConfigError) as info:
        refuse_home_paths(config, "style-pipeline-nobody")
    assert "folders.outbox: ~/outbox: the service runs as style-pipeline-nobody" in str(info.value)
    assert f"write the path itself ({home / 'outbox'})" in str(info.value)


def _status_in(folder: Path, monkeypatch, capsys) -> str:
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert cli.main(["status"]) == 2
    return capsys.readouterr().err


def test_status_inside_an_installs_folder_names_the_config_above_not_an_init(tmp_path, monkeypatch, capsys):
    """`cd inbox && style-pipeline status` advised `style-pipeline init <...>/inbox` (rev12b, MED)."""
    config = make_config(tmp_path / "install", folders={"outbox": "out"})
    (tmp_path / "install" / "out" / "starry").mkdir(parents=True)
    for folder, key, shown in ((config.parent / "inbox", "the inbox", "../config.yaml"),
                               (config.parent / "out" / "starry", "the outbox", "../../config.yaml")):
        err = _status_in(folder, monkeypatch, capsys)
        assert err.startswith(f"style-pipeline status: {folder / 'config.yaml'}: invalid configuration:"), err
        assert f"{folder} is {key} of {config}" in err and f"--config {shown}" in err, err
        assert "init" not in err, err
    elsewhere = tmp_path / "install" / "notes"  # a folder the config above does not use: either is offered
    elsewhere.mkdir()
    err = _status_in(elsewhere, monkeypatch, capsys)
    assert "--config ../config.yaml" in err and f"style-pipeline init {elsewhere}" in err, err


def test_a_misspelt_default_recipe_gets_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(make_config(tmp_path, default_recipe="Starry"))
    assert any("default_recipe: no recipe named 'Starry'; did you mean 'starry'?" in p for p in info.value.problems)


def test_format_jpg_is_jpeg_in_the_config_and_in_a_sidecar(tmp_path):
    """`format: jpg` was refused while `stylize -o x.jpg` took it (rev12b)."""
    config = load(make_config(tmp_path, defaults={"format": "jpg"}, recipes={
        "starry": {"styles": ["starry_night.jpg"]}, "scream": {"styles": ["the_scream.jpg"], "format": "JPG"}}))
    assert [r.settings.format for r in config.recipes.values()] == ["jpeg", "jpeg"]
    sidecar = tmp_path / "inbox" / "a.yaml"
    sidecar.write_text("format: jpg\n")
    recipe, overrides = load_sidecar(sidecar, config)
    assert overrides == {"format": "jpeg"}
    assert recipe is None and config.recipe_settings(config.recipes["starry"], overrides).format == "jpeg"


def test_a_bad_sidecars_fix_says_where_the_pair_is_now(tmp_path):
    """"drop the photo and its sidecar again" left one looking in the inbox, where neither was any more."""
    from pipeline.daemon.prechecks import pre_check_sidecar
    from pipeline.daemon.spool import Spool

    config = load(make_config(tmp_path))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    shutil.copy(SAMPLES / "coffee.jpg", config.inbox / "a.jpg")
    (config.inbox / "a.yaml").write_text("recipe: nope\n")
    job = spool.claim(config.inbox / "a.jpg", "2026-11-29T00:00:00Z", config.inbox / "a.yaml")
    with pytest.raises(JobFailure) as info:
        pre_check_sidecar(job, config)
    assert info.value.fix == (f"Fix a.yaml and drop the photo and its sidecar into the inbox again (both are in "
                              f"{config.failed} now)")


def test_a_second_daemon_on_one_config_is_a_warning(tmp_path, monkeypatch):
    """Logged at info (rev11b), where it doubles the memory and halves the speed (rev12b)."""
    from structlog.testing import capture_logs

    config = load(make_config(tmp_path))
    monkeypatch.setattr(running, "folders", lambda path: {"inbox": config.inbox, "outbox": config.outbox,
                                                          "spool": config.spool})
    with capture_logs() as logs:
        running.record(config)
    said = [e for e in logs if e["event"].startswith("another daemon")]
    assert [e["log_level"] for e in said] == ["warning"], logs
    assert "twice the memory" in said[0]["event"]
