"""The manifest (config.yaml): folders, defaults, recipes, sidecars, validated with line numbers.

This module is the face callers use (load, read_folders, read_setting, and the schema's names handed on); the
schema lives in config_schema.py, the YAML reading in yaml_read.py, the checks in config_build.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..engine.settings import DEFAULT_MAX_PIXELS
from .config_build import build
from ..errors import ConfigError  # noqa: F401 - handed on, as are Config, RayOptions and Recipe below
from .config_schema import FOLDER_KEYS, Config, RayOptions, Recipe, missing_config_fix  # noqa: F401
from .yaml_read import CONFIG_MAX_BYTES, Problems, key_lines, read_yaml


def _read_mapping(path: str | Path) -> tuple[Path, dict]:
    source = Path(path).resolve()
    try:
        data = read_yaml(source, CONFIG_MAX_BYTES)[1] or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the config ({exc})"], source) from exc
    return source, data if isinstance(data, dict) else {}


def read_folders(path: str | Path) -> dict[str, Path]:
    """Just the folders, without checking styles (and so without importing torch): for `report`."""
    source, data = _read_mapping(path)
    folders = data.get("folders") or {}
    return {key: (source.parent / str(folders.get(key, key))).resolve() for key in FOLDER_KEYS}


def read_max_pixels(path: str | Path) -> int:
    """The largest max_pixels a recipe decodes under (its own, else defaults', else the engine's), read unchecked
    as read_folders reads: the report's thumbnails decode what the daemon would and nothing bigger (a bomb in
    failed/), where they used the engine's default whatever the config said (rev7g). Not a whole number >= 256:
    the default's (validate names it)."""
    data = _read_mapping(path)[1]

    def limit(mapping: object, fallback: int) -> int:
        value = mapping.get("max_pixels") if isinstance(mapping, dict) else None
        return value if type(value) is int and value >= 256 else fallback

    base = limit(data.get("defaults"), DEFAULT_MAX_PIXELS)
    recipes = data.get("recipes")
    return max([limit(body, base) for body in recipes.values()] if isinstance(recipes, dict) and recipes else [base])


def read_setting(path: str | Path, key: str) -> Any:
    """One top-level value, unchecked (`install-service` asks whether `notify:` is set)."""
    return _read_mapping(path)[1].get(key)


def load(path: str | Path, busy_wait: float | None = None, on_path: bool = False) -> Config:
    """Read and validate config.yaml; raise ConfigError listing every problem with its line (one that could not
    be read at all has the OSError as its __cause__). ``busy_wait``: see fsio.open_regular; ``on_path``:
    config_build.build."""
    source = Path(path).resolve()
    try:
        node, data = read_yaml(source, CONFIG_MAX_BYTES, busy_wait)
    except OSError as exc:
        fix = missing_config_fix(source) if isinstance(exc, FileNotFoundError) else None
        raise ConfigError([f"cannot read the file ({exc.strerror})"], source, fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source.name}: not UTF-8 text ({exc.reason})"], source) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{source.name}:1: the file must be a mapping of settings"], source)
    problems = Problems(source, key_lines(node) if node else {})
    config = build(source, data, problems, on_path)
    if problems.items:
        raise ConfigError(problems.items, source)
    assert config is not None
    return config


def remember_removed_recipes(old: Config, new: Config) -> Config:
    """``new`` knowing the recipes reloads took away (less any put back): a photo still waiting in such a recipe's
    inbox folder was meant for it, so it fails as unknown_recipe instead of quietly taking the default recipe."""
    removed = (old.removed_recipes | set(old.recipes)) - set(new.recipes)
    return dataclasses.replace(new, removed_recipes=frozenset(removed))
