"""rev8b finding 1: a copy whose writer sets the final size first (Windows Explorer over SMB, aria2, `rsync
--preallocate`, torrent clients) and stalls mid-copy has a hole where the rest will go; WebP, uncompressed TIFF and
BMP decode its zeros "fully", so it was claimed and styled from a mostly black picture. A file with a hole before its
end is not ready (settle.unwritten_gap): it waits the hole's longer wait, and is styled whole once written."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from daemon_helpers import SAMPLES, make_config, outputs, start, stop, wait_for, wait_ready
from pipeline.daemon import settle

LIMIT = 100_000_000


def _picture(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(SAMPLES / "coffee.jpg").convert("RGB").resize((480, 320)).save(buffer, fmt)
    return buffer.getvalue()


def _preallocated(path: Path, data: bytes, written: float = 0.3):
    """The final size first, then the first ``written`` part: as an SMB copy from Windows leaves it mid-stall."""
    handle = open(path, "wb")
    handle.truncate(len(data))
    handle.write(data[: int(len(data) * written)])
    handle.flush()
    return handle


def _has_holes(folder: Path) -> bool:
    probe = folder / "probe.bin"
    with open(probe, "wb") as handle:
        handle.truncate(1 << 20)
    try:
        with open(probe, "rb") as handle:
            return os.lseek(handle.fileno(), 0, os.SEEK_HOLE) == 0
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.mark.parametrize("suffix,fmt", [("webp", "WEBP"), ("tif", "TIFF"), ("bmp", "BMP")])
def test_a_gap_not_written_yet_is_not_ready_even_though_it_decodes(tmp_path, suffix, fmt):
    if not _has_holes(tmp_path):
        pytest.skip(f"{tmp_path}'s filesystem reports no holes (SEEK_HOLE): the limit the docstring names")
    data, path, check = _picture(fmt), tmp_path / f"holiday.{suffix}", settle.DecodeCheck()
    handle = _preallocated(path, data)
    with open(path, "rb") as file:
        assert settle.decodes(file, LIMIT), "the zero-filled rest decodes: only the hole tells it is not written"
    started = time.monotonic()
    while time.monotonic() - started < settle.RECHECK_MIN + 1:  # past the broken file's wait: still not ready
        assert check.ready(path, LIMIT, 0.3) is False
        time.sleep(0.5)
    handle.write(data[len(data) * 3 // 10:])
    handle.close()
    assert check.ready(path, LIMIT, 0.3) is True


def test_a_file_sparse_on_purpose_is_claimed_after_the_holes_wait(tmp_path, monkeypatch):
    """`cp --sparse=always` of a picture with a zero run: delayed by the wait, never held for good."""
    if not _has_holes(tmp_path):
        pytest.skip(f"{tmp_path}'s filesystem reports no holes (SEEK_HOLE)")
    monkeypatch.setattr(settle, "HOLE_WAIT", 1.0)
    data = _picture("BMP")
    path = tmp_path / "sparse.bmp"
    _preallocated(path, data, written=0.5).close()
    check = settle.DecodeCheck()
    assert check.ready(path, LIMIT, 0.1) is False
    time.sleep(1.2)
    assert check.ready(path, LIMIT, 0.1) is True


def test_a_preallocated_copy_stalled_mid_way_is_styled_whole_once_written(tmp_path):
    """A real daemon: a 2 s stall (settle 0.3 s) is not a finished file; the photo is styled once, whole."""
    if not _has_holes(tmp_path):
        pytest.skip(f"{tmp_path}'s filesystem reports no holes (SEEK_HOLE)")
    config = make_config(tmp_path, settle_seconds=0.3)
    data = _picture("TIFF")
    target = tmp_path / "inbox" / "holiday.tif"
    proc = start(config)
    try:
        wait_ready(proc)
        with _preallocated(target, data) as handle:
            time.sleep(2)  # a stall longer than settle_seconds, inside the 3 s a truncated file was given
            assert target.exists(), "holiday.tif was claimed while 70% of it was still to be written"
            assert outputs(tmp_path) == [], "styled from a half-written picture"
            handle.write(data[len(data) * 3 // 10:])
        wait_for(lambda: outputs(tmp_path), 60, proc)
        kept = tmp_path / "spool" / "done" / "holiday.tif"
        assert kept.read_bytes() == data
        assert [p.name for p in outputs(tmp_path)] == ["holiday.png"]
    finally:
        stop(proc)
