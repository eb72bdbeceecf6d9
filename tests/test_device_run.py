"""bench/device_run.py, the one command for a lent GPU: its dry run on the CPU must exercise what the GPU run
will pass, the GPU run must fit the tool's 10-minute command, and a stage that overruns must be stopped with its
children while the later stages still run and $OUT keeps what was done (the GPU time is lent once)."""
from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pytest  # noqa: E402

from bench import device_run, pool  # noqa: E402
from bench.device_run import Stage  # noqa: E402

RUN_TIMEOUT_S = 600  # the run tool's most for one command (README, "When a GPU is lent")


def flags(argv: list[str]) -> set[str]:
    return {a for a in argv if a.startswith("--")}


def program(argv: list[str]) -> list[str]:
    return argv[:next(i for i, a in enumerate(argv + ["--"]) if a.startswith("--"))]


def test_the_dry_run_takes_the_gpu_runs_stages_with_every_flag_and_the_gpu_run_fits_one_command():
    real, dry = device_run.stages(False, Path("/w"), "m"), device_run.stages(True, Path("/w"), "m")
    assert [s.name for s in real] == [s.name for s in dry] == ["install", "env", "pool", "print", "speed", "graph",
                                                                     "gpu"]
    for r, d in zip(real, dry):
        assert program(r.argv) == program(d.argv) and flags(r.argv) <= flags(d.argv), r.name
    budget = sum(s.share_s for s in real) + device_run.RESERVE_S  # the install is a stage: inside the budget
    assert budget + device_run.KILL_AFTER_S + 5 <= RUN_TIMEOUT_S  # 5 s: python's start and the last print


def test_a_print_or_pool_stage_cut_short_loses_its_least_needed_row_not_issue_14s_comparison():
    """8192 px (minutes on an H200) runs last, after single scale at 2048 px (4096 px single scale was measured on
    the H200: its time goes to 8192 px); batch 1 at 1024 px (already measured) is the pool's last row."""
    from bench.print import cases, parse

    plan = {s.name: s for s in device_run.stages(False, Path("/w"), "m")}
    argv = plan["print"].argv
    order = [(size, scales) for size, scales, _ in cases(parse(argv[argv.index("bench.print") + 1:]))]
    assert order == [(2048, "auto"), (2048, "1"), (4096, "auto"), (8192, "auto")]
    pool = plan["pool"].argv
    last = pool[pool.index("--last") + 1]
    assert last == "every GPU batch 1@1024" and last.split("@")[0] in device_run.POOL_LAYOUTS.split(",")


def child_that_hangs(pidfile: Path) -> list[str]:
    """A stage that starts a grandchild (as bench.print and bench.pool do) and never ends."""
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(120)\n")
    return [sys.executable, "-c", code]


def print_cut_short(picture: Path) -> list[str]:
    """A print stage that finished one row (its picture written, its JSON line on stderr), then hangs."""
    row = {"size": 64, "scales": "auto", "levels": [32, 64], "steps": 3, "device": "cpu", "wall_s": 1.0,
           "peak_gib": 0.1, "tiles": {}, "path": str(picture), "look": 1.2, "seams": None}
    code = ("import json, sys, time\nfrom PIL import Image\n"
            f"Image.new('RGB', (64, 64), 'red').save({str(picture)!r})\n"
            f"print(json.dumps({row!r}), file=sys.stderr, flush=True)\ntime.sleep(120)\n")
    return [sys.executable, "-c", code]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def test_a_stage_past_its_time_is_stopped_with_its_children_and_the_rest_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(device_run, "MIN_STAGE_S", 1)
    monkeypatch.setattr(device_run, "RESERVE_S", 0)
    monkeypatch.setattr(device_run, "KILL_AFTER_S", 1)
    work, out, pidfile = tmp_path / "work", tmp_path / "out", tmp_path / "grandchild.pid"
    work.mkdir()
    once = "| a | b |\\n|---|---|\\n| 1 | 2 |"  # printed as it goes, then whole (as bench/gpu.py does)
    table = [sys.executable, "-c", f"print('# t\\n{once}\\n{once}\\nprose')"]
    plan = [Stage("hang", 3, child_that_hangs(pidfile), "-"),
            Stage("print", 3, print_cut_short(tmp_path / "cpu-64-auto.png"), "Large prints"),
            Stage("table", 20, table, "somewhere")]
    device_run.execute(plan, 26, dict(os.environ), work, out, dry=True)

    assert [s.status for s in plan] == ["timed out", "timed out", "ok"]
    assert plan[0].wall_s < 120 and not alive(int(pidfile.read_text()))  # stopped, not the hang's 120 s run out
    summary = (out / "summary.md").read_text()
    assert "## table: ok\n\n# t\n\n| a | b |\n|---|---|\n| 1 | 2 |\n" in summary and summary.count("| 1 | 2 |") == 1
    assert "cut short" in summary and "| 64 | auto (32-64) | 3 | cpu | 1.0 s | 0.1 GiB | 1 | 1.20x | - |" in summary
    assert set(os.listdir(out)) <= set(device_run.FILES) and {"summary.md", "results.json", "log.txt"} <= set(
        os.listdir(out))
    assert (out / "look.jpg").stat().st_size > 0
    with tarfile.open(out / "extras.tar.gz") as tar:
        assert "pictures/cpu-64-auto.jpg" in tar.getnames() and "print.err" in tar.getnames()
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["hang", "print", "table"] and stages[1]["rows"][0]["look"] == 1.2


def test_a_stage_with_too_little_time_left_is_skipped_not_started(tmp_path, monkeypatch):
    monkeypatch.setattr(device_run, "RESERVE_S", 0)
    never = tmp_path / "started"
    plan = [Stage("late", 5, [sys.executable, "-c", f"open({str(never)!r}, 'w')"], "-"),
            Stage("after", 30, [sys.executable, "-c", "pass"], "-")]
    device_run.execute(plan, 40, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=True)
    assert plan[0].status.startswith("skipped") and not never.exists() and plan[1].status == "ok"


def test_a_budget_under_the_shares_shrinks_every_stage_alike_instead_of_skipping_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(device_run, "RESERVE_S", 0)
    quick = [sys.executable, "-c", "pass"]
    plan = [Stage("first", 100, quick, "-"), Stage("second", 100, quick, "-")]
    device_run.execute(plan, 100, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=True)
    assert [s.status for s in plan] == ["ok", "ok"]
    assert 40 <= plan[0].timeout_s <= 50 - device_run.KILL_AFTER_S  # half the budget: its half of the shares


def test_without_a_cuda_gpu_the_gpu_run_stops_after_env_instead_of_running_gpu_sizes_on_the_cpu(tmp_path):
    never = tmp_path / "started"
    plan = [Stage("env", 10, [sys.executable, "-c", "print('{\"cpus\": 2, \"torch\": \"2.11\"}')"], "-"),
            Stage("gpu", 10, [sys.executable, "-c", f"open({str(never)!r}, 'w')"], "-")]
    device_run.execute(plan, 60, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=False)
    assert plan[0].status == "ok" and plan[1].status.startswith("skipped (torch sees no CUDA GPU")
    assert not never.exists()
    assert "skipped (torch sees no CUDA GPU" in (tmp_path / "out" / "summary.md").read_text()


def test_an_env_stage_that_breaks_says_nothing_of_the_gpu_and_stops_nothing(tmp_path):
    ran = tmp_path / "started"
    plan = [Stage("env", 10, [sys.executable, "-c", "import sys; sys.exit('no torch here')"], "-"),
            Stage("gpu", 10, [sys.executable, "-c", f"open({str(ran)!r}, 'w')"], "-")]
    device_run.execute(plan, 60, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=False)
    assert plan[0].status == "failed (exit 1)" and plan[1].status == "ok" and ran.exists()


def test_an_install_that_fails_still_brings_back_a_summary_saying_so(tmp_path, monkeypatch):
    """The payload's install is the first stage, in the budget: pip failing on a broken wheel is a failed stage
    with its stderr in summary.md, not an exception before $OUT holds anything."""
    payload, out = tmp_path / "payload", tmp_path / "out"
    (payload / "whl").mkdir(parents=True)
    (payload / "whl" / "watchdog-6.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    (payload / device_run.WEIGHTS).parent.mkdir(parents=True)
    (payload / device_run.WEIGHTS).write_bytes(b"w")
    monkeypatch.setattr(device_run, "PAYLOAD", payload)
    monkeypatch.setattr(sys, "argv", ["device_run.py"])
    for name, value in {"OUT": str(out), "DEVICE_STAGES": "gpu", "DEVICE_BUDGET_S": "300"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DEVICE_DRY", raising=False)
    device_run.main()
    summary = (out / "summary.md").read_text()
    assert "| install | failed (exit" in summary and "**The payload's install failed**" in summary
    assert "watchdog-6.0.0-py3-none-any.whl" in summary.split("## install: failed")[1]  # pip's own last lines
    assert "- torch: " in summary.split("## env: ")[1]  # the stages after it still ran


def test_log_txt_keeps_the_last_of_each_stream_so_a_chatty_stage_cannot_push_it_past_the_16_mib(tmp_path,
                                                                                                  monkeypatch):
    streams = 2 * len(device_run.stages(False, Path("/w"), "m"))
    assert streams * device_run.LOG_TAIL + (1 << 20) < 16 << 20  # 1 MiB for the headers and the cut notes
    assert device_run.EXTRAS_MAX <= 12 << 20  # the tarball's size is estimated as it is packed: a margin
    monkeypatch.setattr(device_run, "LOG_TAIL", 1000)
    chatty = [sys.executable, "-c", "print('FIR' + 'ST' + 'x' * 5000 + 'LA' + 'ST')"]
    plan = [Stage("chatty", 20, chatty, "-")]
    device_run.execute(plan, 40, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=True)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert plan[0].status == "ok" and "LAST" in log and "FIRST" not in log and len(log) < 1500
    assert "characters cut" in log


def test_a_print_run_after_an_env_that_failed_is_labelled_machine_unknown_not_cpu(tmp_path):
    says = [sys.executable, "-c", "import sys; print(sys.argv[-1])", "--machine", ""]
    plan = [Stage("env", 10, [sys.executable, "-c", "import sys; sys.exit('no torch here')"], "-"),
            Stage("print", 10, says, "-")]
    device_run.execute(plan, 60, dict(os.environ), tmp_path / "work", tmp_path / "out", dry=False)
    assert plan[1].status == "ok" and plan[1].stdout.startswith("machine unknown (env failed)")
    assert "CPU" not in plan[1].stdout


def test_a_later_call_replaces_a_stages_arguments_and_share_from_its_environment_keeping_what_the_run_needs(
        monkeypatch):
    """The second, shorter call of a session measures only what changed: DEVICE_ARGS_<NAME> and
    DEVICE_SHARE_<NAME> reshape a stage on the command line; the pool keeps --gpu and its --out (the daemons' logs
    come back from there), the print its --machine (filled in from env's probe)."""
    default = {s.name: s.share_s for s in device_run.stages(False, Path("/w"), "m")}
    monkeypatch.setenv("DEVICE_ARGS_POOL", "--sizes 1024 --only 'every GPU batch auto'")
    monkeypatch.setenv("DEVICE_SHARE_POOL", "60")
    monkeypatch.setenv("DEVICE_ARGS_PRINT", "--device cuda --sizes 4096 8192")
    plan = {s.name: s for s in device_run.stages(False, Path("/w"), "m")}
    pool, prints = plan["pool"], plan["print"]
    assert pool.share_s == 60 != default["pool"] and plan["print"].share_s == default["print"]
    assert pool.argv[1:] == ["bench/pool.py", "--gpu", "--out", "/w/pool", "--sizes", "1024", "--only",
                             "every GPU batch auto"]
    assert prints.argv[1:] == ["-m", "bench.print", "--device", "cuda", "--sizes", "4096", "8192", "--machine", "m"]
    assert plan["gpu"].argv[2:4] == ["--repeats", "2"] and plan["gpu"].share_s == default["gpu"]  # the others as they were


@pytest.mark.parametrize("layout", sorted({**pool.LAYOUTS, **pool.GPU_LAYOUTS}))
def test_every_pool_layout_makes_a_config_the_daemon_accepts(tmp_path, layout):
    """A layout's key in the wrong place (``compile`` at the top, where the daemon refuses it) failed its whole
    row on the GPU; the dry run found it. Each layout's config must load as the daemon loads it."""
    from bench.daemon_run import backlog_config
    from pipeline.daemon import config as config_module

    layouts = {**pool.LAYOUTS, **pool.GPU_LAYOUTS}
    loaded = config_module.load(backlog_config(tmp_path / "night", 32, 2, layouts[layout]))
    engine_keys = layouts[layout].get("defaults", {})
    assert all(loaded.defaults[key] == value for key, value in engine_keys.items())
