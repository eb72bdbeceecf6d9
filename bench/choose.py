"""5. Choosing the default recipe: each recipe runs once with early stop off; the early stop rule is then replayed
on the recorded loss curve (exact for one scale; approximate when the coarse level would have stopped too)."""
from __future__ import annotations

from pathlib import Path

from bench.common import PAIRS, load_pair, loadavg, median, pick, save_json, table
from bench.recorder import Recorder, run_engine
from bench.scoring import Judge, first_reach, judge_frames, quiet_per_step
from pipeline.engine import Settings

TOLS = (1e-3, 3e-3, 1e-2)
WINDOW = 20


def simulate_early_stop(raw: list[tuple[int, float]], tol: float, window: int) -> int | None:
    """Monitor._converged on one level's (level_step, raw loss) history: the step it would stop at, or None."""
    hist: list[tuple[int, float]] = []
    for step, loss in raw:
        hist.append((step, loss))
        past = [l for s, l in hist if s <= step - window]
        if past and (past[-1] - loss) / max(abs(past[-1]), 1e-12) < tol:
            return step
    return None


def configs(quick: bool) -> list[dict]:
    if quick:
        found = [dict(lbfgs_history=10, scales=1, coarse_steps=0), dict(lbfgs_history=50, scales=1, coarse_steps=0),
                 dict(lbfgs_history=50, scales=2, coarse_steps=50)]
    else:
        found = [dict(lbfgs_history=m, scales=sc, coarse_steps=cs) for sc, cs in [(1, 0), (2, 50), (2, 100)]
                 for m in (10, 20, 50)]
    return found + [dict(lbfgs_history=50, scales=1, coarse_steps=0, keep_in_range=False)]


def recipe_name(cfg: dict) -> str:
    scales = "single scale" if cfg["scales"] == 1 else f"scales=2 (coarse {cfg['coarse_steps']})"
    return f"m={cfg['lbfgs_history']}, {scales}" + ("" if cfg.get("keep_in_range", True) else ", keep_in_range=False")


class Curve:
    """One recipe's recorded frames, split at the final scale, with its noise-free cost measure. The final scale is
    the one the engine ran last (each frame's n_scales), not the recipe's ``scales``: a coarser level under
    shapes.MIN_SIDE is dropped (scales=2 at 64 px runs one level), and a curve split at the asked-for count had no
    fine frames at all (the smoke run's stops read "0 (none)")."""

    def __init__(self, rec: Recorder) -> None:
        self.coarse = [(f.step, f.raw) for f in rec.frames if f.scale < f.n_scales]
        fine = [f for f in rec.frames if f.scale == f.n_scales]
        self.fine_start = fine[0].step - 1 if fine else 0
        self.fine_raw = [(f.step - self.fine_start, f.raw) for f in fine]
        self.coarse_t = fine[0].elapsed if (self.coarse and fine) else 0.0
        self.coarse_evals = max((f.evals for f in rec.frames if f.scale < f.n_scales), default=0)

    def work(self, p: dict) -> float:
        """Evaluations in full-size units (a half-size level costs ~1/4)."""
        return round(p["evals"] - 0.75 * min(p["evals"], self.coarse_evals), 1)

    def stop(self, tol: float, points: list[dict], coarse_steps: int) -> dict:
        """Where early stop at ``tol`` would have ended the run, and what the run had there."""
        stop = simulate_early_stop(self.fine_raw, tol, WINDOW)
        coarse_stop = simulate_early_stop(self.coarse, tol, WINDOW) if self.coarse else None
        stop_step = self.fine_start + (stop if stop is not None else len(self.fine_raw))
        p = next((p for p in points if p["step"] == stop_step), points[-1])
        return {"fine_step": stop, "step": stop_step, "t": p["t"], "loss": p["loss"], "work": self.work(p),
                "style_ratio": p["style_ratio"], "approx": coarse_stop is not None and coarse_stop < coarse_steps}


def one_recipe(engine, pictures: tuple, judge: Judge, cfg: dict, size: int, steps: int, target: float | None) -> dict:
    s = Settings(size=size, steps=steps, early_stop_tol=0.0, early_stop_window=WINDOW, **cfg)
    rec = Recorder(every=1)
    res = run_engine(engine, *pictures, s, rec)
    pts, curve = judge_frames(judge, rec.frames), Curve(rec)
    reach = first_reach(pts, target) if target is not None else None
    its = rec.iterations(skip=0)
    return {"name": recipe_name(cfg), "config": cfg, "points": pts, "final": judge(res.image),
            "wall_s": rec.frames[-1].elapsed, "steps": res.steps, "evals": rec.evals,
            "stops": {f"{tol:g}": curve.stop(tol, pts, s.coarse_steps) for tol in TOLS}, "coarse_s": curve.coarse_t,
            "reach": None if reach is None else {"t": reach["t"], "step": reach["step"], "work": curve.work(reach)},
            "coarse_evals": curve.coarse_evals, "raw_final": res.losses["total"], "raw_last": rec.frames[-1].raw,
            "fun_median_s": median([it.per_eval for it in its if it.per_eval is not None]),
            "scipy_s_per_iter": median([it.own / it.steps for it in its if it.steps]), "loadavg": loadavg()}


def notebook_target(ttq: list[dict] | None, size: int) -> float | None:
    found = [d["targets"]["notebook"] for d in ttq or [] if d["size"] == size and d["pair"].startswith(PAIRS[0][0].stem)]
    return found[-1] if found else None


def run(engine, args, out: Path, ttq: list[dict] | None) -> dict:
    pictures = load_pair(0)
    size, steps = pick(args, (256, 300), (128, 60), (64, 25))
    target = notebook_target(ttq, size)
    print(f"\n== choosing the default: {Settings().optimizer} recipes at {size} px, {steps} steps, early stop simulated ==")
    if target is None:
        print("  (no notebook target at this size in this run or bench/out/ttq.json; times-to-target left blank)")
    judge, runs = Judge(engine, *pictures), []
    for cfg in configs(args.quick):
        runs.append(one_recipe(engine, pictures, judge, cfg, size, steps, target))
        r = runs[-1]
        print(f"  {r['name']}: {r['steps']} its, {r['evals']} evals, {r['wall_s']:.1f} s, final {r['final']['loss']:.5g}"
              + ("" if r["reach"] is None else f"; notebook loss at {r['reach']['t']:.1f} s (step {r['reach']['step']})")
              + "".join(f"; stop@{k}: step {v['step']} {v['t']:.1f} s loss {v['loss']:.4g}" for k, v in r["stops"].items()))
    d = {"size": size, "steps": steps, "target": target, "window": WINDOW, "tols": list(TOLS), "runs": runs,
         "quick": args.quick, "optimizer": Settings().optimizer}
    save_json(out, "choose", d)
    print(table(*choose_table(d)))
    return d


def choose_row(d: dict, r: dict) -> list:
    q, reach = quiet_per_step(r["points"]), r["reach"] or {}
    row = [r["name"], round(r["evals"] / max(r["steps"], 1), 2), None if q is None else round(q * 1e3),
           round(reach["t"], 1) if reach else None, reach.get("step"), reach.get("work")]
    for tol in d["tols"]:
        st = r["stops"][f"{tol:g}"]
        row += [str(st["step"]) + ("*" if st["approx"] else "") + ("" if st["fine_step"] else " (none)"),
                round(st["t"], 1), st.get("work"), None if not d["target"] else f"{st['loss'] / d['target']:.3f}"]
    return row + [None if not d["target"] else f"{r['final']['loss'] / d['target']:.3f}"]


def choose_table(d: dict) -> tuple[list[str], list[list]]:
    headers = ["recipe", "evals/iter", "quiet ms/iter", "→ notebook loss: s", "iters", "work"]
    for tol in d["tols"]:
        headers += [f"stop {tol:g}/{d['window']}: iter", "s", "work", "loss ÷ target"]
    return headers + [f"loss ÷ target @ {d['steps']} its"], [choose_row(d, r) for r in d["runs"]]
