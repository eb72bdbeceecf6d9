"""left8's list: a photo the service could not take from the inbox stayed listed (status, the report) after the
folder was fixed, until its claim was tried again: the next rescan, hours later behind a backlog. Real daemon in a
subprocess without root's file powers, a real folder mode."""
from __future__ import annotations

import os
import shutil

import pytest

from daemon_helpers import SAMPLES, make_config, start, status_json, stop, wait_for, wait_ready

NO_ROOT_POWERS = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")  # root then obeys file modes


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to make a folder unwritable")
def test_a_fixed_folder_leaves_the_listing_before_the_claim_is_tried_again(tmp_path):
    """rescan_seconds 600 stands for the backlog: the claim is not tried again for ten minutes. The folder's fix
    (chmod) takes the photo off status.json's list within seconds, with no second notice."""
    config = make_config(tmp_path, rescan_seconds=600)
    folder = tmp_path / "inbox" / "scream"
    folder.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", folder / "holiday.jpg")
    folder.chmod(0o555)
    proc = start(config, prefix=NO_ROOT_POWERS)
    try:
        wait_ready(proc)
        listed = wait_for(lambda: status_json(tmp_path).get("unclaimable"), 30, proc)
        assert [e["file"] for e in listed] == ["scream/holiday.jpg"]
        folder.chmod(0o755)
        wait_for(lambda: status_json(tmp_path).get("unclaimable") == [], 60, proc)
        assert listed[0]["folder"] == str(folder)  # status.json names the folder whose fix is watched
        assert (folder / "holiday.jpg").exists(), "the claim was tried again: this test no longer waits on a rescan"
    finally:
        folder.chmod(0o755)
        assert stop(proc) == 0
