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
    assert "steps 5 (all planned steps run) in " in captured.out, captured.out  # said "loss 1.2e+07 (steps)" (rev12b)

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


# --- issue 11 items 7-10: fail fast and in words, before torch loads --------------------------------------------

ROOT = ASSETS.parents[1]
PROBE = """import json, sys
from pipeline import cli
rc = cli.main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def _probe(*argv: str, cwd: Path = ROOT) -> tuple[dict, str]:
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                            cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.parametrize("argv, words", [
    (["stylize", "nope.jpg", str(STYLE), "-o", "{tmp}/x.png"], ["nope.jpg", "no such file"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--size", "0"], ["size must be at least 16"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "/missing/dir/x.png"], ["/missing/dir", "does not exist"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.gif"], ["x.gif", "cannot write .gif", ".png"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.jpg", "--format", "png"], ["does not match"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--device", "banana"],
     ["unknown device 'banana'", "cuda:N"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--weights", "{tmp}/none.pth"], ["none.pth"]),
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--style-blend", "0.7", "0.3"],
     ["--style-blend gives 2 weights for 1 painting", "one --style-blend weight per painting"]),  # rev9d; rev12b: the flag
    (["stylize", str(CONTENT), "starry", "-o", "{tmp}/x.png"],  # a recipe's name said only "no such file" (rev12b)
     ["starry: no such file", "the shipped paintings are in pipeline/assets/styles: starry_night.jpg, the_scream.jpg",
      "did you mean pipeline/assets/styles/starry_night.jpg?"]),
    (["stylize", str(CONTENT), str(STYLE.parent), "-o", "{tmp}/x.png"],
     [str(STYLE.parent), "is a folder, not a picture", "picture file inside it"]),  # said "no such file" (closing9)
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--size", "99999999999999999999"],
     ["size 99999999999999999999 is over the largest the engine makes, 65500 px",  # planned 58 levels (closing9)
      "px on the long side (JPEG's limit; a 5.5 m print at 300 dpi). Change --size on the command line\n"]),  # rev11b
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.webp", "--size", "20000"],
     ["size 20000 is over WebP's limit of 16383 px a side", "at most 16383", "PNG"]),  # failed at the save (mend10c)
    (["stylize", str(CONTENT), str(STYLE), "-o", "{tmp}/x.png", "--device", "cuda"],
     ["device 'cuda' was asked for, but ", "devices here: cpu", "Use one of those, or auto"]),  # rev10b #4
], ids=["missing-input", "size-0", "missing-out-dir", "gif", "format-clash", "banana", "missing-weights",
        "blend-count", "style-name", "style-folder", "size-huge", "size-over-webp", "cuda-missing"])
def test_usage_and_path_errors_come_before_torch(tmp_path, argv, words):
    from pipeline.engine.device_here import cuda_missing

    if "cuda" in argv and cuda_missing(["cuda"]) is None:
        pytest.skip("this machine can give cuda (or it cannot be judged without torch)")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    outcome, err = _probe(*argv)
    assert outcome == {"rc": 2, "torch": False}, err
    assert err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err
    assert list(tmp_path.iterdir()) == []


def test_a_bare_value_error_is_a_bug_and_keeps_its_traceback(monkeypatch, tmp_path):
    """cli.main caught every ValueError as the user's mistake, so a bug deep in torch or PIL became one "error:"
    line and exit 2, with nothing to say where (rev9d). A person's mistakes are PipelineErrors (UsageError,
    SettingsError); anything else is raised."""
    from pipeline import commands

    def broken(args):
        raise ValueError("a bug deep in a library")

    monkeypatch.setattr(commands, "cmd_status", broken)
    with pytest.raises(ValueError, match="a bug deep"):
        cli.main(["status", "--config", str(tmp_path / "config.yaml")])


def test_a_mistyped_duration_or_preset_is_still_a_one_line_error(tmp_path, capsys):
    """What used to reach the CLI as a bare ValueError and is a person's mistake is in the vocabulary now."""
    assert cli.main(["init", str(tmp_path / "site")]) == 0
    capsys.readouterr()
    code = cli.main(["report", "--config", str(tmp_path / "site" / "config.yaml"), "--since", "12x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--since '12x'" in err and "like 12h" in err
    from pipeline.engine.settings import preset
    from pipeline.errors import SettingsError

    with pytest.raises(SettingsError, match="unknown preset 'slow'.*Choose one of seed, fast"):
        preset("slow")


@pytest.mark.parametrize("command", ["init", "validate", "status", "report"])
def test_status_validate_init_and_report_never_import_torch(tmp_path, command):
    site = tmp_path / "site"
    if command != "init":
        assert _probe("init", str(site))[0]["rc"] == 0
    argv = [command, str(site)] if command == "init" else [command, "--config", str(site / "config.yaml")]
    outcome, err = _probe(*argv)
    assert outcome == {"rc": 0, "torch": False}, err


@pytest.mark.parametrize("device", ["cuda:99", "cuda"])
def test_a_missing_device_says_what_exists(tmp_path, capsys, device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = cli.main(["stylize", str(CONTENT), str(STYLE), "-o", str(tmp_path / "x.png"), "--device", device,
                     "--size", "32", "--steps", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"device '{device}' was asked for" in err and "devices here: cpu" in err and "Use one of those" in err


def test_a_gpu_number_past_the_last_is_said_once(tmp_path, monkeypatch):
    """On a box with one GPU, `--device cuda:3` read "device 'cuda:3' was asked for, but cuda:3 was asked for, but
    this machine has 1 NVIDIA GPU(s)" (rev10f): device_here gave a sentence, not its reason. One GPU faked here: a
    device node in a folder, and a torch build record with CUDA."""
    from pipeline.engine import device_here
    from pipeline.errors import DeviceError

    (tmp_path / "nvidia0").touch()
    monkeypatch.setattr(device_here, "DEV", tmp_path)
    monkeypatch.setattr(device_here, "torch_build", lambda: {"cuda": "12.1", "hip": "None", "__version__": "2.8"})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cli.sys, "platform", "linux")
    with pytest.raises(DeviceError) as refused:
        cli.check_cuda_here("cuda:3")
    assert str(refused.value).count("was asked for") == 1, refused.value
    assert str(refused.value).startswith("device 'cuda:3' was asked for, but this machine has 1 NVIDIA GPU(s), "
                                         "cuda:0 to cuda:0; devices here: cpu, cuda:0"), refused.value


def test_progress_in_a_log_is_plain_lines(tmp_path, capsys):
    """stderr is not a terminal here (captured): one line per report, no carriage-return frames."""
    out = tmp_path / "x.jpg"
    code = cli.main(["stylize", str(CONTENT), str(STYLE), "-o", str(out), "--size", "32", "--steps", "4",
                     "--early-stop-tol", "0", "--device", "cpu", "--progress-seconds", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], err
    assert all(line.startswith("step ") and "loss" in line for line in lines)
    with Image.open(out) as img:
        assert img.format == "JPEG"


def test_plain_progress_waits_its_interval_and_always_shows_the_last_step():
    import io

    from pipeline.engine.optimize import StepInfo
    from pipeline.progress import ProgressBar

    stream = io.StringIO()
    with ProgressBar(every_seconds=3600, stream=stream) as bar:
        for step in range(1, 51):
            bar.update(StepInfo(step, 50, 1, 1, (24, 32), 1e5 / step, 1.0, 1.0, 0.0, step * 0.1, 5.0))
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/50", "50/50"]
    assert "32x24" in lines[0] and "ETA" in lines[0] and "ETA" not in lines[1]


def test_every_option_has_help_text():
    parser = cli.build_parser()
    stylize = parser._subparsers._group_actions[0].choices["stylize"]
    for action in stylize._actions:
        words = (action.help or "").split("(default:")[0].strip()
        assert words, f"{action.option_strings or action.dest} has no help text"
    preset = next(a for a in stylize._actions if "--preset" in a.option_strings)
    assert "seed:" in preset.help and "fast:" in preset.help and "2800" in preset.help


def test_readme_says_what_the_bare_stylize_command_does():
    """README called `stylize photo.jpg painting.jpg` the default recipe (384 px, 100 steps); it runs Settings'."""
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "stylize photo.jpg painting.jpg -o out.png" in line)
    assert "default recipe" not in line
    assert f"{Settings().size} px" in line and f"{Settings().steps} steps" in line


def test_the_terminal_bar_does_not_claim_a_rate_from_its_first_frame():
    """The bar starts at the first step the engine reports; counting those as done in 0 s gave 37,449 steps/s."""
    import io

    from pipeline.engine.optimize import StepInfo
    from pipeline.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with ProgressBar(stream=stream) as bar:
        bar.update(StepInfo(10, 50, 1, 1, (24, 32), 1e5, 1.0, 1.0, 0.0, 1.0, 4.0))
    first = next(frame for frame in stream.getvalue().split("\r") if "10/50" in frame)
    assert "?step/s" in first or "step/s" not in first, first


# --- rev6b finding 1: nothing the run writes may land on what it reads ------------------------------------------

@pytest.mark.parametrize("case", ["output-is-photo", "output-is-style", "record-is-style", "checkpoint-is-photo",
                                  "checkpoint-is-output", "output-is-photo-by-symlink"])
def test_a_run_that_would_write_over_an_input_is_refused_before_anything_is_written(tmp_path, case):
    photo, style = tmp_path / "photo.png", tmp_path / "style.png"
    Image.open(CONTENT).convert("RGB").resize((40, 32)).save(photo)
    Image.open(STYLE).convert("RGB").resize((40, 32)).save(style)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "same.png").symlink_to(photo)
    out, checkpoint, clash = {
        "output-is-photo": ("photo.png", None, ("the output would replace the photo", "photo.png")),
        "output-is-style": ("style.png", None, ("the output would replace the style", "style.png")),
        "record-is-style": ("style.webp", None, ("the output's record would replace the style", "style.json")),
        "checkpoint-is-photo": ("out.png", "photo.png", ("the checkpoint would replace the photo", "photo.png")),
        "checkpoint-is-output": ("out.png", "out.png", ("the checkpoint would replace the output", "out.png")),
        "output-is-photo-by-symlink": ("link/same.png", None, ("the output would replace the photo", "photo.png")),
    }[case]
    if case == "record-is-style":  # a painting whose name ends .json: `-o style.webp` writes style.json
        style = style.rename(tmp_path / "style.json")
    before = {p.name: _sha256(p) for p in tmp_path.iterdir() if p.is_file()}
    argv = ["stylize", str(photo), str(style), "-o", str(tmp_path / out), "--size", "32", "--steps", "2",
            "--device", "cpu", "-q"] + (["--checkpoint", str(tmp_path / checkpoint)] if checkpoint else [])
    outcome, err = _probe(*argv)
    assert outcome == {"rc": 2, "torch": False}, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert clash[0] in err and clash[1] in err and "differently" in err
    assert {p.name: _sha256(p) for p in tmp_path.iterdir() if p.is_file()} == before  # nothing written or changed


def test_a_max_memory_without_a_unit_is_refused_before_torch(tmp_path):
    """`--max-memory 20` meant 20 GiB and ran with 20 bytes: many tiles, another result (rev6b finding 3)."""
    outcome, err = _probe("stylize", str(CONTENT), str(STYLE), "-o", str(tmp_path / "x.png"), "--max-memory", "20",
                          "--size", "32", "--steps", "1", "--device", "cpu", "-q")
    assert outcome == {"rc": 2, "torch": False}, err
    assert err.count("\n") == 1 and "Change --max-memory on the command line" in err and "'20' has no unit" in err and "20GiB" in err
    assert list(tmp_path.iterdir()) == []


def test_a_too_thin_photo_is_refused_naming_the_file(tmp_path):
    """The engine finds a photo too thin to stylize; its refusal named no file (rev6b finding 7)."""
    thin = tmp_path / "strip.png"
    Image.open(CONTENT).convert("RGB").resize((2, 64)).save(thin)
    out = tmp_path / "out" / "x.png"
    out.parent.mkdir()
    outcome, err = _probe("stylize", str(thin), str(STYLE), "-o", str(out), "--size", "64", "--steps", "1",
                          "--device", "cpu", "-q")
    assert outcome["rc"] == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"error: {thin}: the picture (2x64 px" in err and "too thin" in err and "Crop it" in err
    assert list(out.parent.iterdir()) == []


def test_status_into_a_pipe_that_closes_early_exits_quietly(tmp_path):
    """rev8a: `status --json | grep -q running` or `status | head -3` (a reader that stops early) printed a
    BrokenPipeError traceback and exit 1. Now: no traceback, 141 as a tool killed by SIGPIPE, and the lines the
    reader took are there."""
    import subprocess
    import sys

    from daemon_helpers import ROOT, make_config

    config = make_config(tmp_path)
    def piped(command: str, reader: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"set -o pipefail; {sys.executable} -m pipeline.cli {command} --config {config} "
                              f"| {reader}", shell=True, executable="/bin/bash", capture_output=True, text=True,
                              cwd=ROOT, timeout=60)

    for command in ("status --json", "status", "validate"):  # `true` is gone long before Python has started
        done = piped(command, "true")
        assert "Traceback" not in done.stderr and done.returncode == 141, (command, done.returncode, done.stderr)
    head = piped("status", "head -1")
    assert head.stdout.startswith("daemon: not running") and "Traceback" not in head.stderr, head


def test_a_broken_pipe_that_is_not_stdouts_is_not_hidden(monkeypatch):
    """The quiet exit above is for stdout's reader gone only: a broken pipe elsewhere (a notify command's stdin,
    a socket) is raised as it was, not told as exit 141 with no word."""
    def fails(args):
        raise BrokenPipeError(32, "Broken pipe")

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args", lambda argv: dataclasses.replace(_Args(), func=fails))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(BrokenPipeError):
        cli.main(["status"])


@dataclasses.dataclass
class _Args:
    command: str = "status"
    func: object = None


@pytest.mark.parametrize("as_program", [True, False])
def test_the_program_skips_the_last_full_collection_and_a_caller_keeps_its_collector(tmp_path, as_program):
    """cli.leave_quickly: the garbage collector's last pass over torch and the weights cost each daemon stop
    0.5-0.7 s; as the program (argv None) main leaves everything frozen for the exit. A caller of main in its
    own process (argv given) keeps its collector as it was."""
    import subprocess
    import sys

    call = "main()" if as_program else "main(sys.argv[1:])"
    code = f"import gc, sys\nfrom pipeline.cli import main\n{call}\nprint(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code, "validate", "--config", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    frozen = int(out.stdout.strip().splitlines()[-1])
    assert (frozen > 1000) if as_program else frozen == 0, out.stdout + out.stderr


def test_a_second_output_of_one_stem_never_replaces_the_firsts_record(tmp_path, capsys):
    """rev12b: `-o out.png`, then `-o out.jpg`: both wrote out.json, and the PNG's record (settings, seed, hashes)
    was replaced by the JPEG's without a word. Now the second is refused before anything is written; the same
    output again still replaces its own pair."""
    base = ["stylize", str(CONTENT), str(STYLE), "--size", "32", "--steps", "1", "--device", "cpu", "-q"]
    assert cli.main([*base, "-o", str(tmp_path / "out.png")]) == 0
    record = (tmp_path / "out.json").read_bytes()
    capsys.readouterr()
    assert cli.main([*base, "--seed", "7", "-o", str(tmp_path / "out.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'out.json'} is the record of out.png" in err, err
    assert "Name the output differently" in err and "nothing was written" in err
    assert (tmp_path / "out.json").read_bytes() == record and not (tmp_path / "out.jpg").exists()
    assert cli.main([*base, "--seed", "7", "-o", str(tmp_path / "out.png")]) == 0  # its own record: replaced
    assert json.loads((tmp_path / "out.json").read_text())["settings"]["seed"] == 7
    (tmp_path / "notes.json").write_text("my own notes")  # not a record at all: kept too
    assert cli.main([*base, "-o", str(tmp_path / "notes.webp")]) == 2
    assert "is not a record of this output" in capsys.readouterr().err
    assert (tmp_path / "notes.json").read_text() == "my own notes"
