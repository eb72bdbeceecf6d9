"""Make the README's pictures with the shipped default recipe: content | style | result sheets.

    python bench/make_pictures.py                        # writes docs/images/*.jpg and prints the figures
    python bench/make_pictures.py --only astronaut-blend # remakes one picture; its figures.json entry alone changes
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.daemon.config import load  # noqa: E402
from pipeline.engine import StyleTransfer, images  # noqa: E402

SAMPLES = ROOT / "pipeline" / "assets" / "samples"
OUT = ROOT / "docs" / "images"
PAIRS = [("example", "coffee.jpg", "starry"), ("rocket-scream-colour", "rocket.jpg", "scream"),
         ("astronaut-blend", "astronaut.jpg", "blend")]


def sheet(parts: list[Image.Image], height: int = 256) -> Image.Image:
    scaled = [p.convert("RGB").resize((round(p.width * height / p.height), height), Image.Resampling.LANCZOS)
              for p in parts]
    canvas = Image.new("RGB", (sum(p.width for p in scaled) + 8 * (len(scaled) - 1), height), "white")
    x = 0
    for p in scaled:
        canvas.paste(p, (x, 0))
        x += p.width + 8
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=[name for name, _, _ in PAIRS], help="remake this picture alone")
    only = parser.parse_args().only
    config = load(ROOT / "config.yaml")
    engine = StyleTransfer(config.weights, config.device)
    OUT.mkdir(parents=True, exist_ok=True)
    kept = json.loads((OUT / "figures.json").read_text()) if only and (OUT / "figures.json").is_file() else []
    figures = {entry["picture"]: entry for entry in kept}
    for name, photo, recipe_name in PAIRS:
        if only and name != only:
            continue
        figures[f"{name}.jpg"] = picture(engine, config, name, photo, recipe_name)
        print(json.dumps(figures[f"{name}.jpg"]))
    (OUT / "figures.json").write_text(json.dumps(list(figures.values()), indent=2))


def picture(engine: StyleTransfer, config, name: str, photo: str, recipe_name: str) -> dict:
    """One content | style(s) | result sheet, written to docs/images/<name>.jpg; its figures returned."""
    recipe = config.recipes[recipe_name]
    settings = config.recipe_settings(recipe, {})
    content = images.load(SAMPLES / photo)
    styles = [images.load(ref.path) for ref in recipe.styles]
    started = time.perf_counter()
    result = engine.stylize(content, styles, settings)
    seconds = time.perf_counter() - started
    sheet([content, *styles, result.image]).save(OUT / f"{name}.jpg", quality=88)
    return {"picture": f"{name}.jpg", "recipe": recipe_name, "style_blend": list(settings.style_blend),
            "size": list(result.image.size), "steps": result.steps, "stop_reason": result.stop_reason,
            "seconds": round(seconds, 1), "per_step": result.timings["per_step"], "losses": result.losses}

if __name__ == "__main__":
    main()
