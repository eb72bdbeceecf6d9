"""The targets table at the top of RESULTS.md: each target, what was measured, and whether it was met."""
from __future__ import annotations

from bench.common import verdict
from bench.scoring import model_time

TARGETS = {
    "notebook": 50.0,      # reach the notebook's final loss >= 50x faster than the notebook's method
    "pastiche": 2.0,       # reach pastiche's final loss >= 2x faster than pastiche
    "step": 1.15,          # our step <= 1.15x a bare VGG19 forward+backward
    "rss512": 2.0,         # GB
    "rss1024": 5.0,        # GB
    "busy": 0.95,          # daemon worker busy fraction
}


def previous_default(d: dict, ma: float | None) -> str:
    """The scipy L-BFGS-B run (e)'s ratios, when there is one."""
    e = d["reach"].get("e", {}).get("notebook") if "e" in d["runs"] else None
    me = model_time(d, "e", e["step"]) if e else None
    if not (e and me and ma):
        return ""
    return f"; previous default scipy L-BFGS-B (e): {d['runs']['a']['wall_s'] / e['t']:.0f}× wall, {ma / me:.0f}× quiet"


def notebook_row(d: dict) -> list:
    ra, r = d["runs"]["a"], d["reach"]["c"]["notebook"]
    what = (f"reach the notebook's final loss ≥{TARGETS['notebook']:g}× faster than the notebook's method "
            f"({d['hw'][1]}x{d['hw'][0]}{', capped steps' if d['quick'] else ''})")
    if r is None:
        return [what, f"(c) never reached it (final {d['runs']['c']['final']['loss']:.4g} vs "
                f"{d['targets']['notebook']:.4g})", verdict(False)]
    ratio = ra["wall_s"] / r["t"]
    ma, mc = model_time(d, "a", ra["steps"]), model_time(d, "c", r["step"])
    model = "" if not (ma and mc) else (f"; quiet-CPU estimate ({ra['steps']} × Adam step ÷ {r['step']} × "
                                        f"our iteration, each run's 10th-pct step time) **{ma / mc:.0f}×**")
    quiet = (ma / mc) if (ma and mc) else ratio
    return [what, f"(a) {ra['wall_s']:.0f} s ({ra['steps']} steps) vs ours (c) {r['t']:.1f} s (iteration {r['step']}) "
            f"→ {ratio:.0f}× wall{model}{previous_default(d, ma)}", verdict(quiet >= TARGETS["notebook"])]


def pastiche_own_row(d: dict, what: str) -> list:
    rb, r = d["runs"]["b"], d["reach"]["d"]["pastiche_own"]
    if r is None:
        return [what, f"on pastiche's own objective ours (d) never reached {d['targets']['pastiche_own']:.4g}",
                verdict(False)]
    ratio = rb["wall_s"] / r["t"]
    mb, md = model_time(d, "b", rb["steps"]), model_time(d, "d", r["step"])
    model = "" if not (mb and md) else f"; quiet-CPU estimate **{mb / md:.1f}×**"
    quiet = (mb / md) if (mb and md) else ratio
    return [what + " (on pastiche's own objective)", f"(b) {rb['wall_s']:.0f} s ({rb['steps']} steps) vs ours with "
            f"pastiche's balance (d) {r['t']:.1f} s (iteration {r['step']}) → {ratio:.1f}× wall{model}",
            verdict(quiet >= TARGETS["pastiche"])]


def pastiche_literal_row(d: dict, what: str) -> list:
    rb, lit = d["runs"]["b"], d["reach"]["c"]["pastiche"]
    what += " (literal: seed judge, our default recipe)"
    if d["targets"]["pastiche"] >= d["content_score"]["loss"]:
        return [what, f"pastiche's output scores {d['targets']['pastiche']:.4g} on the seed judge, worse than the "
                f"unmodified photo ({d['content_score']['loss']:.4g}): reached at t=0, not informative",
                "n/a (ill-posed)"]
    measured = "never" if lit is None else \
        f"{rb['wall_s']:.0f} s vs {lit['t']:.1f} s → {rb['wall_s'] / max(lit['t'], 1e-9):.1f}×"
    return [what, measured, verdict(lit is not None and rb["wall_s"] / lit["t"] >= 2)]


def step_row(x: dict) -> list:
    med, low = x["median"], x["p10"]
    q = low["default_iter"] / low["floor"]
    qb = (low["lbfgs_iter_full"] or low["lbfgs_iter"]) / low["floor"]
    q1 = (low.get("lbfgs_iter_full_blas1") or low.get("lbfgs_iter_blas1") or 0) / low["floor"]
    return [f"step ≤{TARGETS['step']:g}× a bare VGG19 forward+backward ({x['hw'][1]}x{x['hw'][0]})",
            f"default optimizer ({x.get('optimizer', 'lbfgs')}) per iteration **{q:.2f}×** quiet (10th pct), "
            f"{med['default_iter'] / med['floor']:.2f}× medians; {med['evals_per_iter']:.2f} evals/iteration, "
            f"{low['default_eval'] / low['floor']:.2f}× per evaluation; our loss alone "
            f"{low['loss_fb'] / low['floor']:.2f}×; Adam {low['adam'] / low['floor']:.2f}×. Previous default "
            f"scipy L-BFGS-B m=50: {qb:.2f}× (with OpenBLAS at 1 thread {q1:.2f}×)", verdict(q <= TARGETS["step"])]


def rss_row(rss: list[dict] | None, size: int, key: str, quick: bool) -> list:
    x = next((y for y in rss or [] if y["size"] == size and "vmhwm_kb" in y), None)
    what = f"peak RSS <{TARGETS[key]:g} GB at {size} px on CPU"
    if not x:
        return [what, "not run" + (" in quick mode" if quick else ""), verdict(None)]
    gb = x["vmhwm_kb"] * 1024 / 1e9
    filled = x["steps"] > x["history"]
    extra = 0.0 if filled else (x["history"] - x["steps"]) * 2 * 3 * x["hw"][0] * x["hw"][1] * 8 / 1e9
    text = f"**{gb:.2f} GB**" + ("" if filled else f" after {x['steps']} steps; + up to {extra:.2f} GB once "
                                                    f"the L-BFGS-B history fills (not run in quick mode)")
    return [what, text, verdict(gb + extra < TARGETS[key])]


def daemon_row(daemon: dict | None) -> list:
    what = f"daemon worker ≥{TARGETS['busy']:.0%} busy"
    if daemon and "busy" in daemon:
        return [what, f"{daemon['busy']:.1%} ({daemon['images_per_hour']:.0f} images/hour)",
                verdict(daemon["busy"] >= TARGETS["busy"])]
    return [what, (daemon or {}).get("skipped", "not run (`--daemon`)"), verdict(None)]


def target_rows(ttq, step, rss, daemon, quick) -> list[list]:
    rows = []
    d = next((x for x in ttq or [] if x["pair"].startswith("coffee")), None)
    if d:
        what = f"reach pastiche's final loss ≥{TARGETS['pastiche']:g}× faster than pastiche"
        rows += [notebook_row(d), pastiche_own_row(d, what), pastiche_literal_row(d, what)]
    if step:
        rows.append(step_row(step[0]))
    rows += [rss_row(rss, 512, "rss512", quick), rss_row(rss, 1024, "rss1024", quick), daemon_row(daemon)]
    return rows
