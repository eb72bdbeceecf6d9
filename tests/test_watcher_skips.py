"""What the daemon leaves in the inbox untouched, through a real run (rev9c): a photo tool's metadata beside each
photo, and paintings kept in a folder of the inbox. Each went to failed/, and the paintings' loss failed every photo
of their recipes."""
from __future__ import annotations

import shutil

import pytest

from daemon_helpers import SAMPLES, STYLES, errors, make_config, outputs
from pipeline.daemon.watcher import own_folders

pytestmark = pytest.mark.usefixtures("torch_threads")


@pytest.mark.parametrize("name, body", [
    ("IMG_0002.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>\n'),  # Lightroom/darktable
    ("IMG_0002.AAE", '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict/></plist>\n'),  # iPhone edits
    ("IMG_0002.jpg:Zone.Identifier", "[ZoneTransfer]\nZoneId=3\n"),  # a download copied through WSL
    ("IMG_0002.jpg.json", '{"title": "IMG_0002.jpg", "photoTakenTime": {"timestamp": "1700000000"}}\n'),  # Takeout
    ("IMG_0002.jpg.supplemental-metadata.json", '{"title": "IMG_0002.jpg"}\n'),  # Takeout since 2024
])
def test_a_photo_tools_metadata_file_is_left_alone(tmp_path, engine, name, body):
    """It was claimed as a photo and failed as bad_image, with a notice and "Send a PNG, JPEG, WebP, TIFF or BMP
    file": the Thumbs.db case (rev7a) for photo tools. Now the photo is styled and the metadata stays put."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "IMG_0002.jpg")
    (tmp_path / "inbox" / name).write_text(body)
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert [p.name for p in outputs(tmp_path)] == ["IMG_0002.png"]
    assert errors(tmp_path) == {}, {k: (v["code"], v["fix"]) for k, v in errors(tmp_path).items()}
    assert (tmp_path / "inbox" / name).read_text() == body


def test_paintings_kept_in_a_folder_of_the_inbox_are_never_taken_as_photos(tmp_path, engine):
    """styles_dir: inbox/paintings (a share where people drop photos and paintings): the paintings were claimed as
    photos of the default recipe, left styles_dir, and every photo then failed as too_many_attempts."""
    from pipeline.daemon.daemon import Daemon

    paintings = tmp_path / "inbox" / "paintings"
    paintings.mkdir(parents=True)
    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(STYLES / name, paintings / name)
    config = make_config(tmp_path, styles_dir="inbox/paintings", max_attempts=2)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "beach.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert sorted(p.name for p in paintings.iterdir()) == ["starry_night.jpg", "the_scream.jpg"], \
        f"paintings taken: failed/ holds {sorted(p.name for p in (tmp_path / 'spool' / 'failed').iterdir())}"
    assert [p.name for p in outputs(tmp_path)] == ["beach.png"], errors(tmp_path)


def test_a_styles_dir_holding_the_inbox_hides_no_photo(tmp_path):
    """Only a styles_dir below the inbox is left out of the scan: one above it (styles_dir: .) would hide all."""
    from pipeline.daemon.config import load

    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(STYLES / name, tmp_path / name)
    config = load(make_config(tmp_path, styles_dir="."))
    assert config.styles_dir == tmp_path.resolve()
    assert own_folders(config) == (config.outbox, config.spool)
