"""Names spelt two ways (closing9): an accent is one code point in NFC (what Linux and Windows keyboards type) and a
letter plus a combining mark in NFD (what a Mac's copy often carries). Linux keeps a name's bytes as given, so a
painting named café.jpg in config.yaml was "no such file" beside the Mac's café.jpg, and a sidecar beside a photo
spelt the other way was never read. These tests make real files named both ways."""
from __future__ import annotations

import json
import os
import shutil
import time
import unicodedata

import pytest

from daemon_helpers import SAMPLES, STYLES, make_config, outputs
from pipeline.daemon import config as config_module
from pipeline.daemon.batching import batch_key
from pipeline.daemon.config_build import check_folders
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.prechecks import pre_check_painting
from pipeline.daemon.sidecars import unpaired_sidecars
from pipeline.daemon.spool import Spool
from pipeline.daemon.pairing import sidecar_for
from pipeline.engine import images
from pipeline.fsio import nfc
from pipeline.errors import ConfigError

NFC = unicodedata.normalize("NFC", "Café Renée")
NFD = unicodedata.normalize("NFD", "Café Renée")


def test_the_two_spellings_are_two_names_on_this_disk(tmp_path):
    """The premise: both spellings made here are distinct files (were the disk to fold them, nothing is tested)."""
    assert NFC != NFD
    (tmp_path / f"{NFC}.txt").write_text("a")
    (tmp_path / f"{NFD}.txt").write_text("b")
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("typed, on_disk", [(NFC, NFD), (NFD, NFC)], ids=["nfc-typed", "nfd-typed"])
def test_a_painting_named_one_way_in_config_yaml_is_found_spelt_the_other_way(tmp_path, typed, on_disk):
    styles = tmp_path / "styles"
    (styles / on_disk).mkdir(parents=True)  # a folder named the other way too
    shutil.copy(STYLES / "starry_night.jpg", styles / on_disk / f"{on_disk}.jpg")
    shutil.copy(STYLES / "the_scream.jpg", styles / "the_scream.jpg")  # the other recipe's
    config = config_module.load(make_config(tmp_path, styles_dir=str(styles),
                                            recipes={"starry": {"styles": [f"{typed}/{typed}.jpg"]}}))
    [ref] = config.recipes["starry"].styles
    assert ref.path == styles / on_disk / f"{on_disk}.jpg"  # the disk's own spelling, which the worker stats
    pre_check_painting(ref.path)  # raises where the file is not there as named
    assert images.load(styles / typed / f"{typed}.jpg").size == images.load(ref.path).size  # stylize's path


@pytest.mark.parametrize("photo_name, sidecar_name", [(f"{NFD}.jpg", f"{NFC}.yaml"), (f"{NFC}.jpg", f"{NFD}.jpg.yaml")],
                         ids=["nfd-photo", "nfc-photo-whole-name"])
def test_a_sidecar_spelt_the_other_way_is_the_photos(tmp_path, photo_name, sidecar_name):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "coffee.jpg", inbox / photo_name)
    (inbox / sidecar_name).write_text("recipe: scream\n")
    assert sidecar_for(inbox / photo_name) == inbox / sidecar_name
    old = time.time() - 60
    os.utime(inbox / sidecar_name, (old, old))
    assert unpaired_sidecars(inbox) == {}  # not told as "no photo beside it"


def test_a_sidecar_of_another_name_is_still_not_paired(tmp_path):
    """Only the spelling is forgiven: Cafe (no accent) is another name."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "coffee.jpg", inbox / f"{NFD}.jpg")
    (inbox / "Cafe Renee.yaml").write_text("recipe: scream\n")
    assert sidecar_for(inbox / f"{NFD}.jpg") is None


def test_a_photo_does_not_take_the_sidecar_of_its_twin_spelt_the_other_way(tmp_path, engine):
    """rev10c: Café Renée.jpg in NFC and in NFD both in the inbox (one typed here, one copied from a Mac), and only
    the NFD one has its sidecar (NFD). The NFC photo found no sidecar of its own bytes, fell back to the folder's
    spellings and took its twin's: styled 'scream' in 3 steps, the twin's settings (first claimed, it took a copy
    of the sidecar, as read_by_another said it read it too). An exact match still wins: the twin keeps its own."""
    from pipeline.daemon.sidecars import read_by_another

    config = make_config(tmp_path)
    inbox = tmp_path / "inbox"
    for name in (f"{NFC}.jpg", f"{NFD}.jpg"):
        shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
    (inbox / f"{NFD}.yaml").write_text("recipe: scream\nsteps: 3\n")
    assert len(os.listdir(inbox)) == 3
    assert sidecar_for(inbox / f"{NFD}.jpg") == inbox / f"{NFD}.yaml"
    assert sidecar_for(inbox / f"{NFC}.jpg") is None
    assert not read_by_another(inbox / f"{NFD}.jpg", inbox / f"{NFD}.yaml", inbox)  # not shared with the twin
    old = time.time() - 60
    os.utime(inbox / f"{NFD}.yaml", (old, old))
    assert unpaired_sidecars(inbox) == {}  # the twin's own
    assert Daemon(config, once=True, engine=engine).run() == 0
    logs = [json.loads(p.read_text()) for p in (tmp_path / "outbox").rglob("*.json")]
    styled = {log["input"]["name"]: (log["recipe"], log["settings"]["steps"]) for log in logs}
    assert styled == {f"{NFD}.jpg": ("scream", 3), f"{NFC}.jpg": ("starry", 2)}, styled
    done = os.listdir(tmp_path / "spool" / "done")
    assert f"{NFD}.yaml" in done and f"{NFC}.yaml" not in done, done


def test_the_nfc_photo_never_takes_the_nfd_sidecar_its_two_nfd_twins_share(tmp_path):
    """rev10e: Café Renée.jpg and .png from a Mac (NFD) share one NFD Café Renée.yaml, beside Café Renée.jpg typed
    here (NFC) with no sidecar. Once the NFD .jpg was claimed, the NFC .jpg had no twin left: it fell back to the
    NFD sidecar still kept for the NFD .png (read_by_another said so) and was styled with the Mac pair's settings.
    A sidecar spelt the other way is not the photo's while another file has its exact stem."""
    from pipeline.daemon.config import load as load_config
    from pipeline.daemon.sidecars import read_by_another

    config = load_config(make_config(tmp_path))
    check_folders(config)
    inbox = config.inbox
    spool = Spool(inbox, config.work, config.done, config.failed,
                  lambda photo, sidecar: read_by_another(photo, sidecar, inbox))
    for name in (f"{NFC}.jpg", f"{NFD}.jpg", f"{NFD}.png"):
        shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
    (inbox / f"{NFD}.yaml").write_text("recipe: scream\nsteps: 3\n")
    assert sidecar_for(inbox / f"{NFC}.jpg") is None  # its twin is there: not its sidecar
    claimed = spool.claim(inbox / f"{NFD}.jpg", "2026-11-29T00:00:00Z", sidecar_for(inbox / f"{NFD}.jpg"))
    assert claimed.sidecar == f"{NFD}.yaml"
    assert sidecar_for(inbox / f"{NFC}.jpg") is None, "no twin left, but the NFD .png still reads it"
    claimed = spool.claim(inbox / f"{NFD}.png", "2026-11-29T00:00:00Z", sidecar_for(inbox / f"{NFD}.png"))
    assert claimed.sidecar == f"{NFD}.yaml"
    nfc_job = spool.claim(inbox / f"{NFC}.jpg", "2026-11-29T00:00:00Z", sidecar_for(inbox / f"{NFC}.jpg"))
    assert nfc_job.sidecar is None, sorted(os.listdir(inbox))
    assert [p.name for p in inbox.iterdir() if not p.is_dir()] == [], "the sidecar went with its last photo"
    (inbox / f"{NFD}.yaml").write_text("recipe: scream\n")  # alone beside the NFC photo: still its own
    shutil.copy(SAMPLES / "coffee.jpg", inbox / f"{NFC}.jpg")
    assert sidecar_for(inbox / f"{NFC}.jpg") == inbox / f"{NFD}.yaml"


def test_a_recipe_folder_spelt_the_other_way_is_that_recipe_once_in_its_outbox(tmp_path, engine):
    """mend10c: inbox/café/ copied from a Mac (NFD) beside config.yaml's recipe café (NFC) was matched by bytes:
    its photos were styled with the default recipe, unsaid, into outbox/starry/café/. Now the recipe folder, the
    batch key and the outbox path all take the recipe by its NFC form (Config.recipe_named), as does a sidecar's
    ``recipe:`` spelt the other way; each photo lands once, in outbox/café/ as config.yaml spells it."""
    cafe_nfc, cafe_nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    config = make_config(tmp_path, batch=2, recipes={cafe_nfc: {"styles": ["the_scream.jpg"]},
                                                     "starry": {"styles": ["starry_night.jpg"]}})
    (tmp_path / "inbox" / cafe_nfd / "trip").mkdir(parents=True)
    for rel in ("a.jpg", "b.jpg", "trip/c.jpg"):
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / cafe_nfd / rel)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "d.jpg")
    (tmp_path / "inbox" / "d.yaml").write_text(f"recipe: {cafe_nfd}\n")
    assert Daemon(config, once=True, engine=engine).run() == 0
    landed = {p.relative_to(tmp_path / "outbox").as_posix(): json.loads(p.with_suffix(".json").read_text())["recipe"]
              for p in outputs(tmp_path)}
    assert landed == {f"{cafe_nfc}/a.png": cafe_nfc, f"{cafe_nfc}/b.png": cafe_nfc,
                      f"{cafe_nfc}/trip/c.png": cafe_nfc, f"{cafe_nfc}/d.png": cafe_nfc}
    assert sorted(p.name for p in (tmp_path / "spool" / "done").rglob("*.jpg")) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert not list((tmp_path / "spool" / "failed").rglob("*.error.json"))


def test_a_recipe_folder_spelt_the_other_way_batches_under_its_recipe(tmp_path):
    cafe_nfc, cafe_nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    loaded = config_module.load(make_config(tmp_path, recipes={cafe_nfc: {"styles": ["the_scream.jpg"]},
                                                               "starry": {"styles": ["starry_night.jpg"]}}))
    check_folders(loaded)
    (loaded.inbox / cafe_nfd).mkdir()
    shutil.copy(SAMPLES / "coffee.jpg", loaded.inbox / cafe_nfd / "a.jpg")
    job = Spool(loaded.inbox, loaded.work, loaded.done, loaded.failed).claim(
        loaded.inbox / cafe_nfd / "a.jpg", "2026-01-01T00:00:00Z", None)
    assert batch_key(job, loaded)[0] == cafe_nfc  # batched with café's photos, as its plan is keyed (plan_key)


def test_a_recipe_named_in_nfd_in_config_yaml_is_accepted_and_its_nfc_twin_refused(tmp_path):
    """A config.yaml typed on a Mac may spell café in NFD: its combining accent is no letter, and the name was refused
    as 'letters, digits, - and _ only'. Two recipes spelt alike but for the encoding name one folder: refused."""
    cafe_nfc, cafe_nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    loaded = config_module.load(make_config(tmp_path, recipes={cafe_nfd: {"styles": ["the_scream.jpg"]}}))
    assert loaded.recipe_named(cafe_nfc) == cafe_nfd and loaded.recipe_named("cafe") is None
    with pytest.raises(ConfigError, match="differs from the recipe"):
        config_module.load(make_config(tmp_path, recipes={cafe_nfd: {"styles": ["the_scream.jpg"]},
                                                          cafe_nfc: {"styles": ["starry_night.jpg"]}}))


def test_the_start_makes_no_twin_of_a_recipe_folder_spelt_the_other_way(tmp_path):
    """rev10f #3: check_folders made inbox/<recipe> by config.yaml's bytes, so beside a Mac's NFD inbox/café/ it made
    a second, NFC café/ (two folders that look alike, photos split between them). The one on disk is used now."""
    cafe_nfc, cafe_nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    loaded = config_module.load(make_config(tmp_path, recipes={cafe_nfc: {"styles": ["the_scream.jpg"]}}))
    (loaded.inbox / cafe_nfd).mkdir()
    check_folders(loaded)
    assert sorted(name for name in os.listdir(loaded.inbox) if nfc(name) == cafe_nfc) == [cafe_nfd]
