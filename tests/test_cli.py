"""`style-pipeline stylize`: a real run, its JSON record, the help text and the one-line errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline import cli
from pipeline.engine import Settings
from pipeline.engine.vgg import find_weights

pytestmark = pytest.mark.usefixtures("torch_threads")

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
CONTENT = ASSETS / "samples" / "rocket.jpg"
STYLE = ASSETS / "styles" / "the_scream.jpg"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stylize_writes_image_and_record(tmp_path, capsys):
    out = tmp_path / "result.png"
    code = cli.main(["stylize", str(CONTENT), str(STYLE), "-o", str(out), "--size", "48", "--steps", "5",
                     "--log-every", "1", "--early-stop-tol", "0", "--device", "cpu", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote" in captured.out and str(out) in captured.out

    with Image.open(out) as img:
        img.load()
        assert img.format == "PNG" and max(img.size) == 48
    record = json.loads((tmp_path / "result.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "result.png"]

    settings = record["settings"]
    assert settings["size"] == 48 and settings["steps"] == 5 and settings["format"] == "png"
    assert set(settings) == {f.name for f in dataclasses.fields(Settings)}
    assert Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}).steps == 5
    weights = find_weights()
    assert record["weights"]["sha256"] == _sha256(weights) and record["weights"]["kind"] == "caffe"
    assert {"style_pipeline", "torch", "torchvision", "python"} <= set(record["versions"])
    assert record["device"] == "cpu"
    assert record["timings"]["total"] > 0 and "per_step" in record["timings"]
    assert [p["step"] for p in record["curve"]] == [1, 2, 3, 4, 5]
    assert record["steps"] == 5 and record["losses"]["total"] > 0
    assert record["input"]["sha256"] == _sha256(CONTENT) and record["styles"][0]["sha256"] == _sha256(STYLE)
    assert record["output"]["sha256"] == _sha256(out)


def test_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["stylize", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    section = text[text.index("engine settings"):]
    fields = dataclasses.fields(Settings)
    starts = []
    for f in fields:
        flag = "--" + f.name.replace("_", "-") + " "
        assert flag in section, f"{flag} missing from --help"
        starts.append(section.index(flag))
    assert starts == sorted(starts)
    for f, start, end in zip(fields, starts, starts[1:] + [len(section)]):
        assert f"(default: {f.default!r})" in section[start:end], f.name


@pytest.mark.parametrize("argv, words", [
    (["--steps", "-1"], ["steps must be >= 0"]),
    (["--style-blend", "0", "0"], ["style_blend"]),
    (["--size", "8"], ["size"]),
])
def test_bad_settings_are_a_one_line_error(tmp_path, capsys, argv, words):
    out = tmp_path / "x.png"
    code = cli.main(["stylize", str(CONTENT), str(STYLE), str(STYLE), "-o", str(out), "-q", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("style-pipeline stylize: error:")
    for word in words:
        assert word in err
    assert not out.exists()


def test_missing_input_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    code = cli.main(["stylize", str(missing), str(STYLE), "-o", str(tmp_path / "x.png"), "--size", "48"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(missing) in err and "no such file" in err


def test_missing_weights_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "vgg.pth"
    code = cli.main(["stylize", str(CONTENT), str(STYLE), "-o", str(tmp_path / "x.png"),
                     "--weights", str(missing), "--size", "48"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(missing) in err


def test_bool_typo_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["stylize", str(CONTENT), str(STYLE), "-o", str(tmp_path / "x.png"), "--preserve-color", "ture"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--preserve-color" in err.splitlines()[-1] and "Traceback" not in err
