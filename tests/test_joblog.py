"""Issue 11, item 4: a real job's JSON log against the README's table, key by key."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT, SAMPLES, STYLES, make_config
from pipeline.daemon.daemon import Daemon
from pipeline.engine.settings import field_names

RAY_ONLY = {"executor", "worker", "lost_attempts"}
BATCHED_ONLY = {"batch"}  # a photo run in a batch (test_batch_landing checks its value); rev8a: it had no row


def readme_table() -> dict[str, list[str]]:
    """{key: [fields]} from the README's "The JSON log" table; "every engine setting" -> ["*"]."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The JSON log", 1)[1].split("\n## ", 1)[0]
    table: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        fields = ["*"] if "every engine setting" in cells[1] else re.findall(r"`([^`]+)`", cells[1])
        for key in re.findall(r"`([^`]+)`", cells[0]):
            table[key] = fields
    return table


def test_the_log_matches_the_readme_table(tmp_path, engine, torch_threads):
    config = make_config(tmp_path, defaults={"size": 72, "steps": 4, "scales": 2, "coarse_steps": 2, "log_every": 1,
                                             "tv_weight": 0.5, "early_stop_tol": 0})
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    (tmp_path / "spool" / "done").mkdir(parents=True)
    (tmp_path / "spool" / "done" / "rocket.jpg").write_bytes(b"an earlier rocket")
    assert Daemon(config, once=True, engine=engine).run() == 0
    log = json.loads((tmp_path / "outbox" / "starry" / "rocket.json").read_text())
    table = readme_table()

    assert BATCHED_ONLY <= set(table), "the batched photo's key has its row"
    assert set(log) == set(table) - RAY_ONLY - BATCHED_ONLY, "every key documented, every documented key present"
    for key, fields in table.items():
        if key in RAY_ONLY | BATCHED_ONLY or not fields:
            continue
        value = log[key][0] if isinstance(log[key], list) else log[key]
        expected = set(field_names()) if fields == ["*"] else set(fields)
        assert set(value) == expected, key

    assert log["schema_version"] == 1
    assert log["settings"]["style_weight"] == 1e-5  # resolved for the caffe weights, not null
    with Image_open(tmp_path / "outbox" / "starry" / "rocket.png") as out:
        assert log["output"]["size"] == list(out.size)
    width, height = log["input"]["size"]
    assert width > height  # rocket.jpg is landscape: [w, h]
    assert log["scales"][-1] == log["output"]["size"] and log["scales"][-1][0] > log["scales"][-1][1]
    assert log["tiles"] == [None] * len(log["scales"])  # beside scales: each level ran whole at 72 px
    # beside scales: what each level got (rev9a #4); 72 px keeps one level of scales: 2 (its coarse one is too small)
    assert log["level_steps"] == [2] * (len(log["scales"]) - 1) + [4] and log["steps"] == sum(log["level_steps"])
    assert "load_weights" not in log["timings"]
    weighted = log["losses"]
    assert abs(weighted["content"] + weighted["style"] + weighted["tv"] - weighted["total"]) <= 1e-3 * weighted["total"]
    assert weighted["style"] == log["losses_unweighted"]["style"] * 1e-5
    for point in log["curve"]:
        assert abs(point["content"] + point["style"] + point["tv"] - point["loss"]) <= 1e-3 * point["loss"]
    kept = Path(log["input"]["kept_as"])
    assert kept == tmp_path / "spool" / "done" / "rocket-1.jpg"
    assert kept.read_bytes() == (SAMPLES / "rocket.jpg").read_bytes()


def test_the_record_says_how_a_print_was_tiled(tmp_path):
    """README: 'The JSON log has `tiles` per level' (rev7b: the record, the CLI's out.json and the daemon's job log
    alike, had no `tiles` at all, though the engine's Result held the plan). 96 px under 12MB: cut into 6 tiles."""
    out = tmp_path / "print.png"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(SAMPLES / "rocket.jpg"),
                           str(STYLES / "starry_night.jpg"), "-o", str(out), "-q", "--size", "96", "--steps", "2",
                           "--scales", "1", "--optimizer", "adam", "--max-memory", "12MB", "--print-dpi", "300"],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert round(Image_open(out).info["dpi"][0]) == 300
    record = json.loads(out.with_suffix(".json").read_text())
    [level] = record["tiles"]
    width, height = record["scales"][0]
    assert level["tiles"] > 1 and level["core"] < width and level["halo"] > 0, level
    assert level["canvas"][0] >= width and level["canvas"][1] >= height  # [w, h], as every size in the record


def Image_open(path):
    from PIL import Image
    return Image.open(path)


def test_the_records_versions_are_read_once_a_process(monkeypatch):
    """Each photo's record looked torchvision's version up in the package metadata again: a search of every path
    entry, 12 ms a photo on the 2-core box (eighth session's profile). Read once; each record gets its own copy."""
    from importlib import metadata

    from pipeline import progress

    looked = []
    plain = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: (looked.append(name), plain(name))[1])
    if hasattr(progress, "_versions"):
        progress._versions.cache_clear()  # read afresh here, whatever this process read before
    first = progress.provenance()["versions"]
    first["torch"] = "changed by its record"
    second = progress.provenance()["versions"]
    assert looked == ["torchvision"]
    assert second["torch"] != "changed by its record" and second["torchvision"] == plain("torchvision")


def test_an_adam_runs_log_records_the_step_size_it_used(tmp_path):
    """rev9a #5: settings.lr 0 means Adam's default (ADAM_DEFAULT_LR, 2.0 in 0-255 units); the log recorded the 0.0
    it was given, which reads as "Adam did not move", while style_weight beside it was resolved."""
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(SAMPLES / "coffee.jpg"),
                           str(STYLES / "starry_night.jpg"), "--size", "32", "--steps", "3", "--optimizer", "adam",
                           "-o", str(out)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert settings["lr"] == 2.0, f"Adam ran at lr 2.0 (ADAM_DEFAULT_LR); the log says lr {settings['lr']}"
