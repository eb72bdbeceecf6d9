"""Issue 11: what the daemon leaves behind and how it counts it: pairs in done/ and failed/, photos at any
depth, never claiming its own files. Real daemons in-process with the real engine, 32 px and 2 steps."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading

import pytest

from daemon_helpers import ROOT, SAMPLES, errors, make_config, outputs, wait_for
from pipeline.daemon import status as status_module
from pipeline.daemon.config import load
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.watcher import own_folders, scan
from pipeline.report import write_reports


def _once(config, engine) -> None:
    assert Daemon(config, once=True, engine=engine).run() == 0


def test_done_counts_photos_only_and_pairs_keep_one_name(tmp_path, engine, torch_threads):
    config = make_config(tmp_path)
    done, failed = tmp_path / "spool" / "done", tmp_path / "spool" / "failed"
    done.mkdir(parents=True)
    failed.mkdir(parents=True)
    shutil.copy(SAMPLES / "rocket.jpg", done / "rocket.jpg")  # an earlier night's rocket, without a sidecar
    (failed / "bad.txt").write_text("an older failure")
    (failed / "bad.yaml").write_text("steps: 1\n")
    inbox = tmp_path / "inbox"
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "rocket.jpg")
    (inbox / "rocket.yaml").write_text("steps: 3\n")
    shutil.copy(SAMPLES / "astronaut.jpg", inbox / "astronaut.jpg")
    (inbox / "astronaut.yaml").write_text("recipe: scream\n")
    (inbox / "bad.txt").write_text("not a picture")
    (inbox / "bad.yaml").write_text("steps: 2\n")
    _once(config, engine)

    assert sorted(p.name for p in done.iterdir()) == ["astronaut.jpg", "astronaut.yaml", "rocket-1.jpg",
                                                      "rocket-1.yaml", "rocket.jpg"]
    assert (done / "rocket-1.yaml").read_text() == "steps: 3\n"
    assert {"bad-1.txt", "bad-1.yaml", "bad-1.txt.error.json"} <= {p.name for p in failed.iterdir()}
    assert (failed / "bad-1.yaml").read_text() == "steps: 2\n"
    assert json.loads((failed / "bad-1.txt.error.json").read_text())["sidecar"] == "bad-1.yaml"
    data = status_module.read(load(config))
    assert (data["done"], data["failed"], data["queue"]) == (3, 1, 0)  # photos, not sidecars
    assert set(data) == readme_status_fields(), "status --json: one name per fact, each documented"
    assert data["recent_failures"][-1]["code"] == "bad_image" and data["state"] == "not running"


def readme_status_fields() -> set[str]:
    """The field names in the README's `status --json` table."""
    section = (ROOT / "README.md").read_text().split("## Watching it run", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.strip().startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row)}


def test_photos_at_any_depth_keep_their_path_and_are_counted(tmp_path, engine, torch_threads):
    config = make_config(tmp_path)
    inbox = tmp_path / "inbox"
    for rel in ("starry/vacation/coffee.jpg", "vacation/rocket.jpg", "scream/a/b/c/astronaut.jpg"):
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / rel.rsplit("/", 1)[1], inbox / rel)
    os.symlink(inbox / "vacation", inbox / "scream" / "link-to-album")  # a link to a folder is never followed
    assert status_module.read(load(config))["queue"] == 4
    _once(config, engine)
    names = {p.relative_to(tmp_path / "outbox").as_posix() for p in outputs(tmp_path)}
    assert names == {"starry/vacation/coffee.png", "starry/vacation/rocket.png", "scream/a/b/c/astronaut.png"}
    assert errors(tmp_path)["link-to-album"]["code"] == "not_a_regular_file"
    log = json.loads((tmp_path / "outbox" / "starry" / "vacation" / "rocket.json").read_text())
    assert log["source"] == "vacation/rocket.jpg" and log["recipe"] == "starry"


def test_an_album_moved_in_whole_is_styled_without_waiting_for_the_rescan(tmp_path, engine, torch_threads):
    config = make_config(tmp_path, rescan_seconds=600)
    daemon = Daemon(config, engine=engine)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.state == "running", 30)
        album = tmp_path / "album"
        album.mkdir()
        shutil.copy(SAMPLES / "coffee.jpg", album / "coffee.jpg")
        os.rename(album, tmp_path / "inbox" / "holiday")  # one moved-in event for the folder, none per file
        wait_for(lambda: outputs(tmp_path), 60)
        assert [p.relative_to(tmp_path / "outbox").as_posix() for p in outputs(tmp_path)] == ["starry/holiday/coffee.png"]
    finally:
        daemon.stop.set()
        thread.join(60)


def test_the_daemon_never_claims_what_the_pipeline_wrote(tmp_path, engine, torch_threads):
    # The outbox and the spool inside the inbox, and last night's report written into it (issue 11, item 1).
    config = make_config(tmp_path, folders={"outbox": "inbox/outbox", "spool": "inbox/spool"})
    inbox = tmp_path / "inbox"
    (inbox / "outbox" / "starry").mkdir(parents=True)
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "outbox" / "starry" / "old.jpg")
    write_reports([inbox / "report.html"], inbox / "outbox", inbox / "spool" / "failed")
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "rocket.jpg")
    assert [p.name for p in scan(inbox, own_folders(load(config)))] == ["rocket.jpg"]
    _once(config, engine)
    assert (inbox / "report.html").is_file() and (inbox / "outbox" / "starry" / "old.jpg").is_file()
    assert not list((inbox / "spool" / "failed").iterdir())
    assert [p.name for p in (inbox / "outbox" / "starry").iterdir() if p.suffix == ".png"] == ["rocket.png"]


def test_an_outbox_or_spool_holding_the_inbox_is_refused(tmp_path):
    import pytest

    from pipeline.daemon.config import ConfigError

    for key, value in (("outbox", "inbox"), ("spool", ".")):
        with pytest.raises(ConfigError, match=f"folders.{key}: .* is the inbox or holds it"):
            load(make_config(tmp_path / key, folders={key: value}))


def test_the_own_file_check_never_opens_a_fifo_or_follows_a_link(tmp_path):
    from pipeline.daemon.watcher import OWN_MARK, wanted

    os.mkfifo(tmp_path / "report.html")  # open() of a FIFO blocks until a writer comes
    mine = tmp_path / "elsewhere.html"
    mine.write_bytes(b"<!-- " + OWN_MARK + b" -->")
    os.symlink(mine, tmp_path / "link.html")
    found: list[bool] = []
    checker = threading.Thread(target=lambda: found.extend(
        wanted(tmp_path / name, tmp_path) for name in ("report.html", "link.html", "elsewhere.html")), daemon=True)
    checker.start()
    checker.join(5)
    assert found == [True, True, False], "FIFOs and links go to the worker (not_a_regular_file), unread"


def test_every_output_format_is_named_once_and_read_the_same_everywhere(tmp_path):
    """rev7e finding 4: the formats were four tables (images.FORMATS, outputs.EXTENSIONS, cli.SUFFIX_FORMATS and
    Settings.validate) that had to agree; now engine.settings.OUTPUT_FORMATS. Each format validates, encodes to
    bytes PIL reads as that format, is named by the daemon with its first suffix, and is what -o picks for each."""
    import io
    from pathlib import Path

    import pytest
    from PIL import Image

    from pipeline.cli import output_format
    from pipeline.daemon import outputs as outputs_module
    from pipeline.engine import Settings, images
    from pipeline.engine.settings import OUTPUT_FORMATS
    from pipeline.errors import PipelineError, SettingsError

    picture = Image.new("RGB", (8, 8), "orange")
    for name, (pil, *suffixes) in OUTPUT_FORMATS.items():
        Settings(format=name).validate()
        assert Image.open(io.BytesIO(images.encode(picture, name))).format == pil
        assert outputs_module.image_name("cup", name) == f"cup{suffixes[0]}"
        assert [output_format(Path(f"out{s.upper()}"), name) for s in suffixes] == [name] * len(suffixes)
    with pytest.raises(SettingsError, match="format must be png, jpeg or webp"):
        Settings(format="gif").validate()
    with pytest.raises(PipelineError, match=r"cannot write \.gif") as said:
        output_format(tmp_path / "out.gif", None)
    assert said.value.fix == "Name the output .png, .jpg, .jpeg or .webp"
    with pytest.raises(PipelineError, match="does not match the name") as said:
        output_format(tmp_path / "out.png", "jpeg")
    assert said.value.fix == "Name it .jpg, or drop --format"


def test_a_contact_sheet_never_overwrites_another_photos_output(tmp_path, engine, torch_threads):
    """rev8c finding 6: trip.sheet.jpg's output is trip.sheet.png, the name trip.jpg's sheet would take; the stem
    is chosen with the sheet's name free too, and a sheet whose name was taken meanwhile is skipped, not written."""
    from PIL import Image

    from pipeline.daemon.outputs import contact_sheet

    config = make_config(tmp_path, contact_sheet=True)
    folder = tmp_path / "outbox" / "starry"
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "trip.sheet.jpg")  # night 1: styled to trip.sheet.png
    _once(config, engine)
    output = folder / "trip.sheet.png"
    before = output.read_bytes()
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "trip.jpg")  # night 2: trip.png's sheet would clash
    _once(config, engine)
    assert output.read_bytes() == before, "trip.jpg's contact sheet replaced trip.sheet.jpg's styled output"
    log = json.loads((folder / "trip-1.json").read_text())
    assert (log["output"]["name"], log["contact_sheet"]) == ("trip-1.png", "trip-1.sheet.png")
    assert (folder / "trip-1.sheet.png").exists()
    picture = Image.new("RGB", (8, 8))
    with pytest.raises(FileExistsError):  # the sheet writer never replaces (a name taken since the stem's choice)
        contact_sheet(picture, picture, picture, output)
    assert output.read_bytes() == before
