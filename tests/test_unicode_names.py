"""Names spelt two ways (closing9): an accent is one code point in NFC (what Linux and Windows keyboards type) and a
letter plus a combining mark in NFD (what a Mac's copy often carries). Linux keeps a name's bytes as given, so a
painting named café.jpg in config.yaml was "no such file" beside the Mac's café.jpg, and a sidecar beside a photo
spelt the other way was never read. These tests make real files named both ways."""
from __future__ import annotations

import os
import shutil
import time
import unicodedata

import pytest

from daemon_helpers import SAMPLES, STYLES, make_config
from pipeline.daemon import config as config_module
from pipeline.daemon.prechecks import pre_check_painting
from pipeline.daemon.sidecars import unpaired_sidecars
from pipeline.daemon.watcher import sidecar_for
from pipeline.engine import images

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
