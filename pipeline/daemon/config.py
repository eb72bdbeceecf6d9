"""The manifest (config.yaml): folders, defaults, recipes, sidecars, validated with line numbers.

This module is the face callers use (load, the partial readers read_*, and the schema's names handed on); the
schema lives in config_schema.py, the YAML reading in yaml_read.py, the checks in config_build.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config_build import build, parse_defaults
from .config_paths import missing_config_fix, parse_folders, styles_folder
from ..errors import ConfigError  # noqa: F401 - handed on, as are Config, RayOptions and Recipe below
from .config_schema import FOLDER_KEYS, Config, RayOptions, Recipe  # noqa: F401
from .yaml_read import CONFIG_MAX_BYTES, Problems, engine_settings, key_lines, read_yaml


def _parse(source: Path, busy_wait: float | None = None) -> tuple[dict, Problems]:
    """The file as a mapping, and a Problems that names its lines; ConfigError (naming the file) when it cannot be
    read or is no mapping. The one reader of config.yaml: load and the partial readers below alike."""
    try:
        node, data = read_yaml(source, CONFIG_MAX_BYTES, busy_wait)
    except OSError as exc:
        fix = missing_config_fix(source) if isinstance(exc, FileNotFoundError) else None
        raise ConfigError([f"cannot read the file ({exc.strerror})"], source, fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source.name}: not UTF-8 text ({exc.reason})"], source) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{source.name}:1: the file must be a mapping of settings"], source)
    return data, Problems(source, key_lines(node) if node else {})


def read_folders(path: str | Path) -> dict[str, Path]:
    """Just the folders, without checking styles (and so without importing torch): for `status` on a refused
    edit, `report` and `install-service`. Parsed by build's own step (config_paths.parse_folders); ConfigError
    naming the file and line when they cannot be read. Other problems there (an unknown key, an inbox inside the
    outbox) still name real folders, which these commands look at: `validate` names those."""
    source = Path(path).resolve()
    data, problems = _parse(source)
    folders = parse_folders(data, source.parent, problems)
    if folders is None:
        raise ConfigError(problems.items, source)
    return folders


def read_max_pixels(path: str | Path) -> int:
    """The largest max_pixels a recipe decodes under (its own, else defaults', else the engine's), parsed as build
    parses it (config_build.parse_defaults, yaml_read.engine_settings): the report's thumbnails decode what the
    daemon would and nothing bigger (a bomb in failed/), where they used the engine's default whatever the config
    said (rev7g). A value build refuses counts as unwritten (validate names it): the page is still written."""
    data, problems = _parse(Path(path).resolve())
    base = parse_defaults(data, problems)[1]
    recipes = data.get("recipes")
    bodies = [(name, body) for name, body in recipes.items() if isinstance(body, dict)] \
        if isinstance(recipes, dict) else []
    return max([base.max_pixels] + [engine_settings(body, ("recipes", name), problems, base).max_pixels
                                    for name, body in bodies])


def read_styles_dir(path: str | Path) -> Path:
    """styles_dir as build resolves it (install-service makes it read-only for the service)."""
    source = Path(path).resolve()
    return styles_folder(_parse(source)[0], source.parent)


def refuse_home_paths(path: str | Path, user: str) -> None:
    """install-service for a service run as ``user``: a path written with `~` (config_paths.written_path) means the
    home of whoever reads the config, so under systemd the service user's (a system user's /home/<user>, never
    made), not the home of the person who validated it and rendered the units. ConfigError naming each such key
    and line, with the path to write instead; nothing when ``user`` is the one running this."""
    import os
    import pwd

    try:
        if pwd.getpwuid(os.getuid()).pw_name == user:
            return
    except KeyError:  # a uid with no name (a container's): another user than the service's, as far as is known
        pass
    source = Path(path).resolve()
    data, problems = _parse(source)
    folders = data.get("folders") if isinstance(data.get("folders"), dict) else {}
    written = {**{("folders", key): folders.get(key) for key in sorted(FOLDER_KEYS)},
               **{(key,): data.get(key) for key in ("styles_dir", "weights", "metrics_file")}}
    for where, value in written.items():
        if isinstance(value, str) and (value == "~" or value.startswith("~/")):  # `~alice/` is alice's to anyone
            problems.add(where, f"{value}: the service runs as {user}, for whom ~ is {user}'s home, not yours; "
                         f"write the path itself ({os.path.expanduser(value)})")
    if problems.items:
        raise ConfigError(problems.items, source, "Write those paths out, then run install-service again")


def read_setting(path: str | Path, key: str) -> Any:
    """One top-level value, unchecked (`install-service` asks whether `notify:` is set); ConfigError when the
    file cannot be read or is no mapping."""
    return _parse(Path(path).resolve())[0].get(key)


def load(path: str | Path, busy_wait: float | None = None, on_path: bool = False) -> Config:
    """Read and validate config.yaml; raise ConfigError listing every problem with its line (one that could not
    be read at all has the OSError as its __cause__). ``busy_wait``: see fsio.open_regular; ``on_path``:
    config_build.build."""
    source = Path(path).resolve()
    data, problems = _parse(source, busy_wait)
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
