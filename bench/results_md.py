"""RESULTS.md from the saved JSON (bench/out/*.json): the targets, then one part per measurement.

Hand-written notes between <!-- NOTES --> / <!-- /NOTES --> (and RECOMMENDATION) markers survive a rebuild.
"""
from __future__ import annotations

from pathlib import Path

from bench import ttq as ttq_mod
from bench.common import read_json, table
from bench.plots import plots
from bench.step_cost import step_table
from bench.targets import target_rows
from pipeline.engine import Settings

INTRO = ("Timings are noisy: other jobs share these two cores (load averages are recorded beside the runs). Compared "
         "things ran in the same process; per-step costs are interleaved rounds, and iteration counts (noise-free) are "
         "given beside every wall time. The load comes in bursts (a step takes 45 ms or 900 ms at 128 px depending on "
         "whether another job holds a core, since the two OpenMP threads then wait on each other), so the \"quiet\" "
         "figures — steps × the run's own 10th-percentile step time — are the contention-robust ones.")
JUDGE = ("**Judge** (same for every tool): the seed's loss — content weight 1, style weight {sw:g} "
         "(`Settings().resolved_style_weight('caffe')`), style layer weights 1, .8, .5, .3, .1 — on the original VGG19 "
         "weights, at the output's size, style resized to the content's shape, evaluated on the saved 8-bit picture "
         "(clamped, rounded), built from `StyleTransfer.style_targets` and `ContentLoss`/`StyleLoss`/`TotalLoss`. "
         "Style ratio = output's style loss ÷ the content photo's own style loss. Judging time is not counted. pastiche "
         "optimises a different balance (its style term is ~10²–10⁴× heavier per layer), so for the pastiche target "
         "the same engine pieces also rebuild *pastiche's own objective* (content weight 1, style weight 1, layer "
         "weights 1000/(C·h·w), ÷100; checked against `PasticheArtist._calc_loss`), and run (d) is our default recipe "
         "on that objective.")
CHOOSE = ("Each recipe ran once for {steps} iterations (at the final scale) with early stop off; the early stop rule "
          "(window {window}) was then replayed on the recorded loss curve — exact for single scale, `*` = approximate "
          "because the coarse level would have stopped early too. *work* = loss evaluations in full-size units (a "
          "half-size evaluation counts ¼): noise-free, unlike the wall seconds. *loss ÷ target* = judged loss ÷ the "
          "notebook's final judged loss (≤ 1: as good as the notebook). keep_in_range=False is judged on the clamped "
          "output.")


def ttq_notes(d: dict) -> str:
    cs, ra, rb = d["content_score"], d["runs"]["a"], d["runs"]["b"]
    return (f"Targets: notebook's final judged loss {d['targets']['notebook']:.5g} ((a)'s own curve ends at "
            f"the raw unclamped {ra['curve'][-1]['raw']:.5g}; clamping + rounding gives the judged value); "
            f"pastiche's final {d['targets']['pastiche']:.5g} on the seed judge, {d['targets']['pastiche_own']:.5g} "
            f"on its own objective. The unmodified photo scores {cs['loss']:.5g} (seed) and "
            f"{d['content_score_p']['loss']:.5g} (pastiche's). Our rebuild of pastiche's loss matched "
            f"its own value to {rb.get('own_loss_check', float('nan')):.1e}. pastiche's setup (VGG load, "
            f"targets: {rb['setup_s']:.1f} s) is not counted; ours counts its target computation. "
            "CPU seconds: " + ", ".join(f"{k} {d['runs'][k]['cpu_s']:.0f}" for k in "abcd")
            + ". 1-min load average before→after: "
            + ", ".join(f"{k} {d['runs'][k]['loadavg'][0][0]}→{d['runs'][k]['loadavg'][1][0]}"
                        for k in "abcd" if d['runs'][k]['loadavg'][0]) + ".")


def ttq_part(ttq: list[dict], made: list[str]) -> list[str]:
    lines = ["## Time to quality", ""]
    for d in ttq:
        lines += [f"### {d['pair']}, {d['hw'][1]}x{d['hw'][0]}" + (" (quick: capped steps)" if d["quick"] else ""),
                  "", table(ttq_mod.HEADERS, ttq_mod.summary(d)), ""]
        if d.get("baselines_reused"):
            lines += [f"(a) and (b) come from an earlier invocation (`--reuse-baselines`: "
                      f"{d['runs']['a'].get('reused_from', '?')}); (c)–(e) ran {d.get('date', '?')}.", ""]
        lines += [ttq_notes(d), ""]
    return lines + [f"![loss vs time]({n})" for n in made if n.startswith("loss_vs_time")] + [""]


def blas_part(x: dict) -> list[str]:
    ab = x.get("blas_ab")
    if not (ab and ab["median"]):
        return []
    rows = [[k, round(v["iter"] * 1e3, 1), round(v["fun"] * 1e3, 1), round(v["scipy"] * 1e3, 1)]
            for k, v in ab["median"].items()]
    return [f"scipy's OpenBLAS thread pool vs torch's at {x['hw'][1]}x{x['hw'][0]} ({ab['pairs']} alternating "
            f"pairs of child processes, {ab['steps']} L-BFGS-B iterations each, medians):", "",
            table(["OPENBLAS_NUM_THREADS", "ms / iteration", "ms / evaluation", "its own ms / iteration"], rows), ""]


def step_part(step: list[dict], made: list[str]) -> list[str]:
    lines = ["## Per-step cost vs the floor", ""]
    for x in step:
        lines += [f"{x['hw'][1]}x{x['hw'][0]}, {x['threads']} torch threads, all samples of {x['rounds']} interleaved "
                  f"rounds (default optimizer `{x.get('optimizer', '?')}`, history {x['history']}, early stop off):",
                  "", table(*step_table(x)), "", *blas_part(x)]
    return lines + (["![step cost](step_cost.png)", ""] if "step_cost.png" in made else [])


def rss_part(rss: list[dict]) -> list[str]:
    rows = [[x["size"], None, None, None, None, None, "failed"] if "vmhwm_kb" not in x else
            [x["size"], f"{x['hw'][1]}x{x['hw'][0]}", x["steps"], round(x["vmhwm_kb"] * 1024 / 1e9, 2),
             round(x["after_load_kb"] * 1024 / 1e9, 2), round(x["lbfgs_work_mb"] * 2 ** 20 / 1e9, 2),
             round(x["seconds"])] for x in rss]
    return ["## Peak memory (RSS)", "",
            f"One subprocess per size, default recipe ({rss[0].get('optimizer', '?')}, history "
            f"{rss[0].get('history', '?')}), VmHWM of the child. The L-BFGS history fills as it goes, so the "
            "full run goes history + 5 iterations.", "",
            table(["size", "pixels", "steps", "peak RSS GB", "RSS after loading VGG GB",
                   "L-BFGS history work GB (computed)", "run s"], rows), ""]


def daemon_part(daemon: dict | None) -> list[str]:
    if not (daemon and "busy" in daemon):
        return ["## Daemon throughput", "", (daemon or {}).get("skipped", "Not run")
                + ". Run with `--daemon`; the section is bench/throughput.py.", ""]
    d = daemon
    return ["## Daemon throughput", "",
            f"`style-pipeline once` on a backlog of {d['drops']} drops at {d['size']} px, {d['steps']} steps each (local "
            f"executor, defaults otherwise): {d['images']} images in {d['wall_s']:.1f} s from first claim to last job "
            f"done = {d['images_per_hour']:.0f} images/hour; the engine was optimising {d['busy_s']:.1f} s of it = "
            f"**{d['busy']:.1%} busy** (the rest: decode, style targets, encode, write, claim). Process wall time "
            f"with start-up {d['total_s']:.1f} s.", ""]


def choose_part(choose: dict, made: list[str]) -> list[str]:
    from bench.choose import choose_table

    lines = ["## Choosing the default", "",
             f"{choose['size']} px, coffee + starry night, optimizer `{choose.get('optimizer', '?')}` (the default). "
             + CHOOSE.format(steps=choose["steps"], window=choose["window"]), "", table(*choose_table(choose)), ""]
    return lines + (["![recipes](recipes.png)", ""] if "recipes.png" in made else []) + ["<!-- RECOMMENDATION -->", ""]


def keep_notes(text: str, md_path: Path) -> str:
    """Hand-written notes between markers survive a regeneration."""
    if md_path.is_file():
        old = md_path.read_text()
        for marker in ("NOTES", "RECOMMENDATION"):
            start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
            if start in old and end in old:
                text = text.replace(start, old[old.index(start):old.index(end) + len(end)])
    return text


def report(out: Path, md_path: Path, quick: bool) -> str:
    ttq, step, rss, choose, daemon = (read_json(out, n) for n in ("ttq", "step", "rss", "choose", "daemon"))
    meta = read_json(out, "meta") or {}
    made = plots(md_path.parent, ttq, step, rss, choose)
    lines = ["# Benchmarks" + (" (quick mode)" if quick else ""), "",
             f"Generated by `bench/bench.py{' --quick' if quick else ''}` on {meta.get('date', '?')}. "
             f"Machine: {meta.get('machine', '?')}. " + INTRO, "",
             JUDGE.format(sw=Settings().resolved_style_weight("caffe")), "", "## Targets", "",
             table(["target", "measured", "verdict"], target_rows(ttq, step, rss, daemon, quick)), "",
             "<!-- NOTES -->", ""]
    lines += ttq_part(ttq, made) if ttq else []
    lines += step_part(step, made) if step else []
    lines += rss_part(rss) if rss else []
    lines += daemon_part(daemon) + (choose_part(choose, made) if choose else [])
    text = keep_notes("\n".join(lines), md_path)
    md_path.write_text(text + "\n")
    return text
