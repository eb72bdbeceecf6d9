"""Issue 13: `precision: auto` is measured per device, recorded once, and read back (engine/precision.py)."""
from __future__ import annotations

import json
import math
import os
import warnings

import pytest
import torch

from pipeline.cli import main
from pipeline.engine import Settings, images, precision

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's own cache folder: a record written here must not reach the session's other tests."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", str(folder))
    return folder


def record(folder, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / precision.FILE).write_text(data if isinstance(data, str) else json.dumps(data))


def test_the_probe_records_what_it_measured_and_the_rule_decides_on_real_figures(engine, content, style, cache,
                                                                                  torch_threads):
    """Real inputs: this CPU's loss passes (the probe's own) and the judged losses of two real runs."""
    measured = precision.probe(engine, content, style, size=32, steps=2, repeats=1)
    ms = measured["loss_pass_ms"]
    assert set(ms) == {"fp32", "bf16"} and min(ms.values()) > 0
    judged = measured["judged_loss"]
    if precision.faster(CPU, ms):  # a CPU with bf16 instructions: both runs judged, the rule applied to them
        assert judged is not None and measured["choice"] == precision.decide(CPU, ms, judged)
    else:  # this box: no bf16 instructions, so bf16 is far slower and not judged
        assert measured["choice"] == "fp32" and judged is None
    assert precision.write_record(CPU, measured) == cache / precision.FILE
    assert precision.recorded(CPU) == measured["choice"] == precision.resolve(CPU, "auto")

    same = precision.judged_loss(engine, content, style, 32, 3, "fp32")
    worse = precision.judged_loss(engine, content, style, 32, 1, "fp32")  # fewer steps: a real, worse loss
    assert worse > same * (1 + precision.WITHIN)
    quick, slow = 10.0, 20.0  # the rule's inputs: this CPU's own speeds may be alike (native bf16)
    bf16_faster, bf16_slower = {"fp32": slow, "bf16": quick}, {"fp32": quick, "bf16": slow}
    assert precision.decide(CPU, bf16_faster, {"fp32": same, "bf16": same}) == "bf16"
    assert precision.decide(CPU, bf16_faster, {"fp32": same, "bf16": worse}) == "fp32"  # more than 1% above
    assert precision.decide(CPU, bf16_faster, {"fp32": worse, "bf16": same}) == "bf16"  # lower is no fault
    assert precision.decide(CPU, bf16_slower, {"fp32": same, "bf16": same}) == "fp32"
    assert precision.decide(CPU, bf16_faster, None) == "fp32"  # never judged: never chosen
    assert precision.decide(CPU, bf16_faster, {"fp32": same, "bf16": same * 1.0099}) == "bf16"
    assert precision.decide(CPU, bf16_faster, {"fp32": same, "bf16": same * 1.0101}) == "fp32"
    gpu = torch.device("cuda")  # only its type is read: CUDA's default is tf32, the baseline bf16 must beat
    assert precision.decide(gpu, {"tf32": slow, "bf16": quick}, {"fp32": same, "bf16": same}) == "bf16"
    assert precision.decide(gpu, {"tf32": quick, "bf16": slow}, {"fp32": same, "bf16": same}) == "tf32"


def test_auto_on_a_cpu_is_fp32_without_a_record_and_the_log_says_so(engine, content, style, cache, monkeypatch,
                                                                    torch_threads):
    assert precision.resolve(CPU, "auto") == "fp32" and engine.autocast("auto") is None
    assert engine.precision() == "fp32"  # what the daemon's "engine ready" line says
    assert precision.resolve(CPU, "tf32") == "fp32"  # TF32 is a CUDA mode
    assert precision.resolve(torch.device("cuda"), "fp32") == "fp32"
    result = engine.stylize(content, [style], Settings(size=32, steps=1))
    assert result.precision == "fp32" and result.log()["precision"] == "fp32"
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", "off")
    assert precision.record_path() is None and precision.resolve(CPU, "auto") == "fp32"
    assert precision.write_record(CPU, {"choice": "bf16"}) is None


def test_a_recorded_bf16_is_read_back_and_a_cpu_run_goes_through_in_bf16(engine, content, style, cache, torch_threads):
    """The record is what auto uses; bf16 autocast on the CPU runs a job end to end, judged in fp32."""
    precision.write_record(CPU, {"choice": "bf16", "why": "written by the test"})
    assert precision.resolve(CPU, "auto") == "bf16" and engine.autocast("auto") is torch.bfloat16
    assert (engine.precision(), engine.precision("fp32")) == ("bf16", "fp32")
    problem, hw = engine.build_loss(content, [style], Settings(size=32))
    assert problem.autocast is torch.bfloat16
    settings = Settings(size=32, steps=1, early_stop_tol=0)
    in_bf16 = engine.stylize(content, [style], settings)
    in_fp32 = engine.stylize(content, [style], settings.replace(precision="fp32"))  # an explicit value wins
    assert (in_bf16.precision, in_fp32.precision) == ("bf16", "fp32")
    assert in_bf16.steps == 1 and in_bf16.image.size == hw[::-1]
    assert all(math.isfinite(v) for v in in_bf16.losses.values())
    assert in_bf16.losses["total"] < in_bf16.curve[0]["loss"] * 1.5  # a real step, not a blank
    assert images.to_tensor(in_bf16.image).ne(images.to_tensor(in_fp32.image)).any(), "bf16 changed the pixels"


@pytest.mark.parametrize("data, why", [
    ("\x00 not json", "cannot be read as JSON"),
    ("[]", "is not a"),
    ({"schema": "something else", "devices": {}}, "is not a"),
    ("choice fp64", "has no choice among"),
    ("foreign", "was measured on 'NVIDIA H200'"),
])
def test_a_corrupt_or_foreign_record_is_ignored_with_one_warning(cache, data, why):
    entry = {"device": precision.device_name(CPU), "torch": torch.__version__, "choice": "bf16"}
    if data == "choice fp64":
        entry["choice"] = "fp64"
    if data == "foreign":
        entry["device"] = "NVIDIA H200"
    if isinstance(data, str) and data in ("choice fp64", "foreign"):
        data = {"schema": precision.SCHEMA, "devices": {precision.key(CPU): entry}}
    record(cache, data)
    with pytest.warns(precision.RecordWarning, match=why) as caught:
        assert precision.resolve(CPU, "auto") == "fp32"
        assert precision.resolve(CPU, "auto") == "fp32"  # the same file: read and warned about once
    assert len(caught) == 1 and str(cache / precision.FILE) in str(caught[0].message)
    precision.write_record(CPU, {"choice": "bf16"})  # a fresh probe replaces the file it could not trust
    assert precision.resolve(CPU, "auto") == "bf16"


def test_another_devices_record_is_no_warning_and_theirs_survive_our_write(cache):
    record(cache, {"schema": precision.SCHEMA, "devices": {"NVIDIA H200 | torch 2.11": {"choice": "bf16"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve(CPU, "auto") == "fp32"
    precision.write_record(CPU, {"choice": "fp32"})
    devices = json.loads((cache / precision.FILE).read_text())["devices"]
    assert set(devices) == {"NVIDIA H200 | torch 2.11", precision.key(CPU)}


def test_a_cache_folder_that_cannot_be_written_costs_only_the_record(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STYLE_PIPELINE_CACHE", str(blocker / "cache"))
    assert precision.write_record(CPU, {"choice": "bf16"}) is None
    assert precision.resolve(CPU, "auto") == "fp32"


def test_the_command_says_what_auto_means_here(cache, capsys):
    assert main(["precision", "--device", "cpu"]) == 0
    assert "precision auto = fp32 (the default: nothing recorded)" in capsys.readouterr().out
    precision.write_record(CPU, {"choice": "bf16"})
    assert main(["precision", "--device", "cpu"]) == 0
    assert f"precision auto = bf16 (recorded in {cache / precision.FILE})" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--repeats", "0"), ("--steps", "0"), ("--size", "5")])
def test_a_probe_that_cannot_run_is_a_one_line_usage_error(cache, capsys, flag, value):
    """rev9f #4: `--repeats 0` ended in statistics' StatisticsError and `--size 5` in torch's RuntimeError, both
    tracebacks; `--steps 0` was silently the default and recorded as steps 10. Nothing is measured or recorded."""
    assert main(["precision", "--device", "cpu", "--probe", flag, value]) == 2
    assert f"precision {flag} {value}: at least" in capsys.readouterr().err
    assert not (cache / precision.FILE).exists()


def test_a_recorded_choice_still_passes_the_devices_guards(cache, engine):
    """A tf32 record read off CUDA is fp32, as an explicit tf32 is; a device without bf16 autocast (MPS) records
    its default without measuring anything."""
    precision.write_record(CPU, {"choice": "tf32"})
    assert precision.recorded(CPU) == "tf32"
    assert precision.resolve(CPU, "auto") == "fp32" and engine.autocast("auto") is None

    class Mps:
        device = torch.device("mps")  # only its type is read: the probe stops before any pass
    measured = precision.probe(Mps(), None, None)
    assert (measured["choice"], measured["loss_pass_ms"]) == ("fp32", {}) and "not available" in measured["why"]


def test_a_record_rewritten_within_the_clocks_tick_is_read_again(cache):
    """Same size, same mtime: only the inode tells the new file (write_json renames it into place)."""
    precision.write_record(CPU, {"choice": "bf16"})
    path = cache / precision.FILE
    stamp, size = path.stat().st_mtime_ns, path.stat().st_size
    assert precision.resolve(CPU, "auto") == "bf16"
    precision.write_record(CPU, {"choice": "fp32"})
    os.utime(path, ns=(stamp, stamp))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (stamp, size)  # the old memo key, exactly
    assert precision.resolve(CPU, "auto") == "fp32"


def test_an_unjudged_faster_bf16_is_not_called_slower():
    faster = precision.explain(CPU, {"fp32": 10.0, "bf16": 5.0}, None)
    slower = precision.explain(CPU, {"fp32": 5.0, "bf16": 10.0}, None)
    assert "0.50x" in faster and "not faster" not in faster and "not judged, so not chosen" in faster
    assert "2.00x" in slower and "not 5% faster" in slower


def test_a_tiled_level_runs_in_the_precision_its_run_resolved(engine, content, style, cache, torch_threads):
    """``auto`` is read once per run: a new record during the run changes neither its tiled levels nor its plan."""
    from pipeline.engine.transfer import _Run
    precision.write_record(CPU, {"choice": "bf16"})
    run = _Run(engine, content, [style], Settings(size=64, scales=1, max_memory="4MB"), None, None, None)
    assert run.precision == "bf16"
    precision.write_record(CPU, {"choice": "fp32", "why": "a probe while the run goes on"})
    problem = run.loss(run.levels[-1])
    assert run.tiles and problem.autocast is torch.bfloat16
