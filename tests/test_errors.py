"""One error vocabulary: a problem is classified where it is found, and carries its reason and the field at fault."""
from __future__ import annotations

import pytest

from pipeline.engine import Settings, images
from pipeline.errors import ImageError, Reason, SettingsError
from test_images import SAMPLES, _png_header


def test_a_picture_too_large_carries_its_reason_and_a_broken_one_its_own(tmp_path):
    """The daemon files these under too_large / bad_image from the reason, not by reading the message."""
    bomb, broken = tmp_path / "bomb.png", tmp_path / "broken.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    broken.write_text("not a picture\n" * 20)
    reasons = {}
    for path, limit in ((bomb, images.DEFAULT_MAX_PIXELS), (SAMPLES / "coffee.jpg", 512 * 340), (broken, 10**8)):
        with pytest.raises(ImageError) as info:
            images.load(path, max_pixels=limit)
        reasons[path.name] = info.value.reason
    assert reasons == {"bomb.png": Reason.TOO_LARGE, "coffee.jpg": Reason.TOO_LARGE, "broken.png": Reason.BAD_IMAGE}


@pytest.mark.parametrize("change, field", [({"size": 8}, "size"), ({"tv_weight": -1.0}, "tv_weight"),
                                           ({"log_every": 0}, "log_every"), ({"quality": 101}, "quality")])
def test_a_bad_setting_names_its_field_and_the_fix(change, field):
    with pytest.raises(SettingsError) as info:
        Settings(**change).validate()
    assert info.value.field == field and field in info.value.problem
    assert info.value.fix and isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_a_config_points_at_the_line_of_the_field_at_fault(tmp_path):
    """tv_weight: -1 used to be reported against content_weight (the message's first word)."""
    from test_daemon_parts import problems_of
    from daemon_helpers import STYLES

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\ndefaults:\n  content_weight: 1.0\n  tv_weight: -1\n")
    assert any(p.startswith("config.yaml:4: defaults.tv_weight:") for p in problems_of(path)), problems_of(path)
