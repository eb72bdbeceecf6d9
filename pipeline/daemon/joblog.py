"""The JSON log beside each output (``outbox/<recipe>/<stem>.json``): one documented schema.

The README's table "The JSON log" lists every key; tests/test_joblog.py reads that table and checks a real
job's log against it, so the two cannot drift apart. Bump SCHEMA_VERSION when a key changes meaning.

Conventions: sizes are [width, height] everywhere (input, output, scales); loss parts are weighted (they
add up to ``total``), the raw parts are in ``losses_unweighted``; ``settings`` holds resolved values only.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..engine.transparency import told
from ..fsio import write_json
from ..progress import file_facts, provenance, sha256_file
from .spool import Job, now_iso

SCHEMA_VERSION = 1
PARTS = ("content", "style", "tv")


def build(result, content: Path, size: tuple[int, int], styles: list[tuple[Path, float]], *, job: Job | None = None,
          recipe: str | None = None, kept: Path | None = None, frames: int = 1) -> dict:
    """The record of one run, from the engine's (or a Ray actor's) Result: the daemon's job log and the CLI's
    out.json alike (the CLI's has no job: its job fields are null). ``content``: the input file as read, ``size``
    its decoded [w, h], ``frames`` the pages or frames its file holds (the first is styled: images.frames),
    ``styles``: (path, weight) pairs; ``output`` is completed by whoever writes the image."""
    run = result.log()
    flat = told(result.alpha, run["settings"]["format"])  # laid on white to be styled; kept as alpha where it can be
    settings = {**run["settings"], "style_weight": run["style_weight"]}
    weights = dict(zip(PARTS, (settings["content_weight"], settings["style_weight"], settings["tv_weight"])))
    raw = run["losses"]
    return {
        "schema_version": SCHEMA_VERSION, **_job_fields(job, recipe, "job_id", "recipe", "source"),
        "input": {**file_facts(content), "name": job.name if job else content.name, "size": list(size),
                  "frames": frames, "kept_as": str(kept) if kept else None, "transparency": flat},
        "styles": [{"name": path.name, "path": str(path), "weight": weight, "sha256": sha256_file(path)}
                   for path, weight in styles],
        "settings": settings, "weights": run["weights"], **provenance(), "device": run["device"],
        "precision": run.get("precision"),  # what the network ran in: `precision: auto` resolved (issue 13)
        "speed": run.get("speed"),  # what cudnn_benchmark and compile did in this run (engine/speed.py)
        **_job_fields(job, recipe, "attempts", "crashes", "batch_crashes", "queued_at", "claimed_at", "started_at"),
        "finished_at": now_iso(), "optimizing_seconds": run["timings"]["total"],
        "timings": {k: v for k, v in run["timings"].items() if k != "load_weights"},  # once, at start: not per job
        "losses": {"total": raw["total"], **{k: raw[k] * weights[k] for k in PARTS}},
        "losses_unweighted": {k: raw[k] for k in PARTS}, "judge": run.get("judge"),
        "canvas": run["canvas"][::-1] if run.get("canvas") else None,  # a thin picture's padded [w, h]
        "curve": [_weighted(point, _at_level(weights, run.get("style_weights"), point)) for point in run["curve"]],
        "steps": run["steps"], "stop_reason": run["stop_reason"],
        "scales": [[w, h] for h, w in run["scales"]],  # the engine's levels are (height, width)
        "level_steps": run.get("level_steps"),  # the steps planned for each level, beside scales (rev9a #4)
        "style_weights": run.get("style_weights"),  # each level's style weight, beside scales (rev9a #2)
        "level_lrs": run.get("level_lrs"),  # each level's Adam step (a gentle retry's halved), beside scales
        "tiles": [_tiled(run.get("tiles", {}).get(i)) for i in range(len(run["scales"]))],
        "retries": run["retries"], "resumed_from_step": run["resumed_from_step"],
        "output": {"size": list(result.image.size)}, "contact_sheet": None,
    }


def _job_fields(job: Job | None, recipe: str | None, *names: str) -> dict:
    """The job's own fields (``job_id`` is its ``id``), all null for a run outside the daemon."""
    if job is None:
        return dict.fromkeys(names)
    known = {"job_id": job.id, "recipe": recipe}
    return {name: known[name] if name in known else getattr(job, name) for name in names}


def _tiled(plan: dict | None) -> dict | None:
    """A level's tile plan as the record gives it, beside its ``scales`` entry: null where the level ran whole; the
    canvas cut as [w, h] like every size here. Why in the record: nothing else on file said whether a print was
    tiled or how it was cut (rev7b), though README promised it."""
    if plan is None:
        return None
    h, w = plan["hw"]
    return {"tiles": plan["tiles"], "core": plan["core"], "halo": plan["halo"], "canvas": [w, h],
            **({"lbfgs_history": plan["history"]} if "history" in plan else {})}


def _at_level(weights: dict[str, float], style_weights: list | None, point: dict) -> dict[str, float]:
    """The weights of a curve point's level (its ``scale``, from 1): style_strength's style weight is size-aware,
    so a coarser level's points are weighted with that level's, not the final one's (rev9a #2)."""
    level = point.get("scale")
    if not style_weights or not isinstance(level, int) or not 1 <= level <= len(style_weights):
        return weights
    return {**weights, "style": style_weights[level - 1]}


def _weighted(point: dict, weights: dict[str, float]) -> dict:
    """A curve point with its parts weighted, as in ``losses``."""
    return {**point, **{k: point[k] * weights[k] for k in PARTS if isinstance(point.get(k), (int, float))}}


def amend_kept(log_path: Path, kept: Path) -> None:
    """The input's name in done/ changed between planning and moving (another daemon took it): fix the log."""
    record = json.loads(log_path.read_text(encoding="utf-8"))
    record["input"]["kept_as"] = str(kept)
    write_json(log_path, record)
