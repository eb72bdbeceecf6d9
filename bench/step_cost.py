"""2. Per-step cost vs the floor: interleaved rounds of a bare VGG19 forward+backward, our loss, the default
optimiser, the previous default (scipy L-BFGS-B, as shipped and with OpenBLAS at 1 thread), Adam and pastiche.

Every sample is kept; the medians are the headline and the 10th percentiles show the uncontended cost. Loss
evaluations are timed by the engine (StepInfo.eval_seconds); an iteration's wall time minus its evaluations is the
optimiser's own work (for scipy: its float64 copies and L-BFGS-B's compact-matrix update).
"""
from __future__ import annotations

import ctypes
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from bench import pastiche_run
from bench.common import answer_json, child_json, load_pair, loadavg, median, p10, pick, save_json, table
from bench.recorder import Recorder, run_engine
from bench.scoring import Judge
from pipeline.engine import Settings, StyleTransfer, images, preset
from pipeline.engine.optimize import Problem

KEYS = ("floor_fwd", "floor", "loss_fb", "default_iter", "default_eval", "evals_per_iter", "lbfgs_fun", "lbfgs_iter",
        "lbfgs_iter_full", "lbfgs_scipy", "lbfgs_fun_blas1", "lbfgs_iter_blas1", "lbfgs_iter_full_blas1",
        "lbfgs_scipy_blas1", "adam", "pastiche")
LBFGSB = dict(early_stop_tol=0.0, optimizer="lbfgsb", lbfgs_history=50)  # the previous default


class blas_threads:
    """Set the thread count of every loaded OpenBLAS (numpy's and scipy's) for a block, like threadpoolctl."""

    SETTERS = ("scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "openblas_set_num_threads",
               "openblas_set_num_threads64_")
    GETTERS = ("scipy_openblas_get_num_threads", "scipy_openblas_get_num_threads64_", "openblas_get_num_threads",
               "openblas_get_num_threads64_")

    def __init__(self, n: int) -> None:
        self.n, self.saved = n, []

    @staticmethod
    def _libs():
        paths = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                        if "openblas" in line.rsplit("/", 1)[-1].lower()})
        for path in paths:
            lib = ctypes.CDLL(path)
            get = next((getattr(lib, n) for n in blas_threads.GETTERS if hasattr(lib, n)), None)
            put = next((getattr(lib, n) for n in blas_threads.SETTERS if hasattr(lib, n)), None)
            if get and put:
                yield path, get, put

    def __enter__(self) -> "blas_threads":
        for path, get, put in self._libs():
            self.saved.append((put, get()))
            put(ctypes.c_int(self.n))
        return self

    def __exit__(self, *exc) -> None:
        for put, n in self.saved:
            put(ctypes.c_int(n))


class Samples:
    """One size's interleaved rounds; ``m`` holds every sample by key."""

    def __init__(self, engine: StyleTransfer, size: int, out: Path) -> None:
        self.engine, self.size = engine, size
        self.content, self.style = load_pair(0)
        c = images.fit(self.content, size)
        self.hw = c.size[::-1]
        self.x0 = images.to_tensor(c)
        self.problem = Problem(Judge(engine, self.content, self.style).loss_at(self.hw)[0])
        self.pre = engine.vgg.preprocess(self.x0).detach()
        cp, sp, _ = pastiche_run.prepare_inputs(self.content, self.style, size, out / "inputs")
        self.artist = pastiche_run.artist(cp, sp, self.hw)
        self.m: dict[str, list[float]] = {k: [] for k in KEYS}

    def timed(self, key: str, fn) -> None:
        t = time.perf_counter()
        fn()
        self.m[key].append(time.perf_counter() - t)

    def floor_batch(self, k: int) -> None:
        """The floor and our bare loss, a few reps at a time between the runs, so each sees the same load."""
        features = self.engine.vgg.features
        for _ in range(k):
            with torch.no_grad():
                self.timed("floor_fwd", lambda: features(self.pre))
            x = self.pre.clone().requires_grad_()
            self.timed("floor", lambda: features(x).sum().backward())
            y = self.x0.clone().requires_grad_()
            self.timed("loss_fb", lambda: self.problem(y)[0].backward())

    def engine_run(self, settings: Settings) -> Recorder:
        rec = Recorder(every=10 ** 9)
        run_engine(self.engine, self.content, self.style, settings, rec)
        return rec

    def default(self, steps: int) -> None:
        """The default optimizer through the engine, per iteration; evaluations counted."""
        rec = self.engine_run(Settings(size=self.size, steps=steps, early_stop_tol=0.0))
        its, fr = rec.iterations(), rec.frames
        self.m["default_iter"] += [it.wall for it in its]
        self.m["default_eval"] += [it.wall / max(it.evals, 1) for it in its]
        self.m["evals_per_iter"].append((fr[-1].evals - fr[2].evals) / max(fr[-1].step - fr[2].step, 1))

    def lbfgsb(self, steps: int, sfx: str) -> None:
        """scipy's L-BFGS-B (history 50), as shipped (sfx "") or with OpenBLAS at 1 thread (sfx "_blas1")."""
        with blas_threads(1) if sfx else nullcontext():
            its = self.engine_run(Settings(size=self.size, steps=steps, **LBFGSB)).iterations()
        self.m["lbfgs_iter" + sfx] += [it.wall for it in its]
        self.m["lbfgs_iter_full" + sfx] += [it.wall for it in its if it.step > 50]
        self.m["lbfgs_fun" + sfx] += [it.per_eval for it in its if it.per_eval is not None]
        self.m["lbfgs_scipy" + sfx] += [it.own for it in its]

    def adam(self, steps: int) -> None:
        """Adam through the engine (the monitor sees it every log_every=10 steps)."""
        its = self.engine_run(preset("seed", size=self.size, steps=steps)).iterations(skip=0)
        self.m["adam"] += [it.wall / it.steps for it in its]

    def pastiche(self, n: int) -> None:
        for _ in range(n):
            self.timed("pastiche", self.artist.draw)

    def round(self, k: int, lbfgs_its: int, lbfgsb_its: int, adam_steps: int, draws: int) -> None:
        self.floor_batch(k)
        self.default(lbfgs_its)
        self.floor_batch(k)
        for sfx in ("", "_blas1"):
            self.lbfgsb(lbfgsb_its, sfx)
            self.floor_batch(k)
        self.adam(adam_steps)
        self.floor_batch(k)
        self.pastiche(draws)

    def progress(self) -> str:
        ms = {k: median(self.m[k]) * 1e3 for k in ("floor", "default_iter", "lbfgs_iter", "adam", "pastiche")}
        return (f"floor {ms['floor']:.0f} ms, default ({Settings().optimizer}) iteration {ms['default_iter']:.0f} ms, "
                f"scipy L-BFGS-B {ms['lbfgs_iter']:.0f} ms, Adam {ms['adam']:.0f} ms, pastiche {ms['pastiche']:.0f} ms"
                f"  (load {loadavg()})")


def measure(engine: StyleTransfer, size: int, out: Path, args) -> dict:
    hist = Settings().lbfgs_history
    rounds, *sizes = pick(args, (4, 4, hist + 25, 70, 40, 12), (2, 3, 25, 25, 40, 8), (1, 1, 6, 6, 20, 2))
    print(f"\n== per-step cost at {size} px ({rounds} interleaved rounds) ==")
    s = Samples(engine, size, out)
    for r in range(rounds):
        s.round(*sizes)
        print(f"  round {r + 1}: {s.progress()}")
    return {"size": size, "hw": list(s.hw), "rounds": rounds, "median": {k: median(v) for k, v in s.m.items()},
            "p10": {k: p10(v) for k, v in s.m.items()}, "samples": s.m, "threads": torch.get_num_threads(),
            "history": hist, "loadavg": loadavg(), "optimizer": Settings().optimizer,
            "blas_env": os.environ.get("OPENBLAS_NUM_THREADS", "default")}


def run(engine, args, out: Path) -> list[dict]:
    results = []
    sizes = pick(args, args.sizes, [128], [64])
    for size in sizes:
        d = measure(engine, size, out, args)
        if size == sizes[0]:
            print("  OpenBLAS threads A/B (child processes, alternating) ...")
            d["blas_ab"] = blas_ab(size, *pick(args, (2, 40), (1, 20), (1, 6)))
            for mode, v in d["blas_ab"]["median"].items():
                print(f"    OPENBLAS_NUM_THREADS={mode}: iteration {v['iter'] * 1e3:.0f} ms, evaluation "
                      f"{v['fun'] * 1e3:.0f} ms, scipy's own work {v['scipy'] * 1e3:.0f} ms/iteration")
        results.append(d)
        print(table(*step_table(d)))
        save_json(out, "step", results)
    return results


def lbfgs_child(size: int, steps: int) -> None:
    """One previous-default L-BFGS-B run in a fresh process (the BLAS thread count is fixed at numpy's import)."""
    content, style = load_pair(0)
    rec = Recorder(every=10 ** 9)
    run_engine(StyleTransfer(device="cpu"), content, style, Settings(size=size, steps=steps, **LBFGSB), rec)
    its = rec.iterations()
    answer_json("LBFGS_JSON", {"iter": median([it.wall for it in its]), "scipy": median([it.own for it in its]),
                               "fun": median([it.per_eval for it in its if it.per_eval is not None])})


def blas_ab(size: int, pairs: int, steps: int) -> dict:
    """scipy's OpenBLAS threads vs torch's: default vs OPENBLAS_NUM_THREADS=1, alternating child processes."""
    out: dict[str, list[dict]] = {"default": [], "1": []}
    for _ in range(pairs):
        for mode in ("default", "1"):
            env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
            env.update({"OPENBLAS_NUM_THREADS": "1"} if mode == "1" else {})
            answer, _ = child_json(["--_lbfgs-child", str(size), str(steps)], "LBFGS_JSON", env)
            out[mode] += [answer] if answer else []
    summary = {mode: {k: median([r[k] for r in rs if r.get(k) is not None]) for k in ("iter", "fun", "scipy")}
               for mode, rs in out.items() if rs}
    return {"size": size, "pairs": pairs, "steps": steps, "runs": out, "median": summary}


ROWS = [
    ("floor_fwd", "bare VGG19 to relu5_1: forward only"),
    ("floor", "bare VGG19 to relu5_1: forward + backward (**the floor**)"),
    ("loss_fb", "our loss (VGG + Gram/content terms): forward + backward"),
    ("default_iter", "**ours, default optimizer ({opt}, history {history}): per iteration** ({epi:.2f} evals/iteration)"),
    ("default_eval", "ours, default optimizer ({opt}): per evaluation"),
    ("lbfgs_fun", "previous default, scipy L-BFGS-B m=50: one evaluation (loss fwd+bwd)"),
    ("lbfgs_scipy", "previous default, scipy L-BFGS-B m=50: its own work per iteration (float64 copies + update)"),
    ("lbfgs_iter", "previous default, scipy L-BFGS-B m=50: per iteration, all"),
    ("lbfgs_iter_full", "previous default, scipy L-BFGS-B m=50: per iteration once the history is full"),
    ("lbfgs_fun_blas1", "… same with OpenBLAS at 1 thread: one evaluation"),
    ("lbfgs_scipy_blas1", "… same with OpenBLAS at 1 thread: its own work per iteration"),
    ("lbfgs_iter_blas1", "… same with OpenBLAS at 1 thread: per iteration, all"),
    ("lbfgs_iter_full_blas1", "… same with OpenBLAS at 1 thread: per iteration, history full"),
    ("adam", "ours Adam, per step (1 evaluation)"),
    ("pastiche", "pastiche torch L-BFGS, per step (1 evaluation)"),
]


def step_table(d: dict) -> tuple[list[str], list[list]]:
    med, low = d["median"], d["p10"]
    words = {"opt": d.get("optimizer", "lbfgs"), "history": d["history"], "epi": med["evals_per_iter"]}
    rows = [[what.format(**words), round(med[key] * 1e3, 1), round(med[key] / med["floor"], 2),
             None if low.get(key) is None else round(low[key] * 1e3, 1),
             None if low.get(key) is None else round(low[key] / low["floor"], 2)]
            for key, what in ROWS if med.get(key) is not None]
    return ["what", "median ms", "× floor (medians)", "10th pct ms", "× floor (10th pct)"], rows
