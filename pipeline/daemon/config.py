"""The manifest (config.yaml): folders, defaults, recipes, sidecars, validated with line numbers.

Only ``yaml.safe_load``-level constructs are accepted. Every error says ``file:line: key: what is wrong``,
with a "did you mean" for a misspelt key, so a person can fix it without reading the code.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.settings import Settings
from ..errors import PipelineError

# Per-photo overrides a sidecar may set: what changes the look, not what loads the machine.
SIDECAR_KEYS = frozenset({"recipe", "size", "steps", "style_strength", "content_weight", "style_weight", "tv_weight",
                          "preserve_color", "seed", "init", "style_scale", "format", "quality"})
ENGINE_KEYS = frozenset(f.name for f in dataclasses.fields(Settings)) - {"device"}
RECIPE_KEYS = ENGINE_KEYS | {"styles", "description"}
TOP_KEYS = {"folders", "watch", "settle_seconds", "rescan_seconds", "poll_seconds", "after_success", "max_attempts",
            "retry_backoff_seconds", "device", "weights", "styles_dir", "cache_styles", "max_size", "defaults",
            "default_recipe", "recipes", "schedule", "contact_sheet", "log_format", "log_level", "progress_seconds",
            "stall_seconds", "max_crashes",
            "executor", "ray",  # issue 6: where jobs run (local thread or Ray actors)
            "save_every", "metrics_file", "metrics_seconds", "notify"}  # issue 11: 14, 15, 16
FOLDER_KEYS = {"inbox", "outbox", "spool"}


class ConfigError(PipelineError):
    code = "bad_config"

    def __init__(self, problems: list[str], path: str | Path, fix: str | None = None) -> None:
        self.problems = problems
        fix = fix or f"Fix the lines above, then check again: style-pipeline validate --config {path}"
        super().__init__("\n  ".join(["invalid configuration:", *problems]) + "\n" + fix, path=path)
        self.fix = fix


def missing_config_fix(path: Path) -> str:
    """What to do when there is no config at all: a new user's first error, so it names the command that helps."""
    return (f"Write a starter config with `style-pipeline init {path.parent}`, or point --config at yours "
            f"(the default is config.yaml in the current folder)")


@dataclass(frozen=True)
class StyleRef:
    path: Path
    weight: float = 1.0


@dataclass(frozen=True)
class Recipe:
    name: str
    styles: tuple[StyleRef, ...]
    settings: Settings
    description: str = ""


@dataclass(frozen=True)
class RayOptions:
    """Issue 6, ``executor: ray``: where the cluster is and how many actors to run (None = worked out)."""

    address: str | None = None  # None: start a local Ray instance; "auto"; "ray://head:10001"; "host:6379"
    num_workers: int | None = None  # None: one per GPU (num_gpus_per_worker), else one per num_cpus_per_worker
    num_gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    num_cpus_per_worker: float = 1.0
    max_inflight: int | None = None  # None: num_workers; the rest wait unclaimed in the inbox


RAY_KEYS = frozenset(f.name for f in dataclasses.fields(RayOptions))


@dataclass(frozen=True)
class Config:
    path: Path
    inbox: Path
    outbox: Path
    spool: Path
    recipes: dict[str, Recipe]
    default_recipe: str
    styles_dir: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    watch: str = "auto"
    settle_seconds: float = 2.0
    rescan_seconds: float = 60.0
    poll_seconds: float = 2.0
    after_success: str = "move"
    max_attempts: int = 3
    max_crashes: int = 3  # the daemon died this many times in a row inside one job: failed/ as crashed_daemon
    retry_backoff_seconds: float = 30.0
    device: str = "auto"
    weights: Path | None = None
    cache_styles: int = 32
    max_size: int = 4096
    schedule: dict | None = None
    contact_sheet: bool = True
    log_format: str = "auto"
    log_level: str = "info"
    progress_seconds: float = 5.0
    stall_seconds: float = 600.0
    executor: str = "local"  # issue 6: "local" (the in-process Worker) or "ray"
    ray: RayOptions = field(default_factory=RayOptions)
    save_every: int = 0  # write the current picture every N steps into the job's folder; 0 = off
    metrics_file: Path | None = None  # the Prometheus textfile; None = off (build() defaults it under the spool)
    metrics_seconds: float = 5.0
    notify: str | None = None  # a command or URL told when the queue empties after work and on each failure

    @property
    def work(self) -> Path:
        return self.spool / "work"

    @property
    def done(self) -> Path:
        return self.spool / "done"

    @property
    def failed(self) -> Path:
        return self.spool / "failed"

    def recipe_settings(self, recipe: Recipe, overrides: dict[str, Any]) -> Settings:
        settings = recipe.settings.replace(device=self.device, **overrides)
        settings.validate()
        return settings


# --- reading YAML with limits ----------------------------------------------------------------

CONFIG_MAX_BYTES = 1 << 20
SIDECAR_MAX_BYTES = 64 << 10
MAX_YAML_NODES = 20_000  # nodes after expanding aliases: a real config has a few hundred


def read_yaml(path: Path, max_bytes: int) -> tuple[yaml.Node | None, Any]:
    """(node, data) from a YAML file, refusing at once what would take the machine's memory.

    A 312-byte file of nested aliases ("billion laughs") expands to millions of nodes when walked;
    here the composed graph is measured with each shared node counted every time it is reached, but
    each node visited once per parent (memoized), so the check itself is linear in the file.
    Raises ConfigError; OSError and UnicodeDecodeError pass through for the caller to name.
    """
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ConfigError([f"{path.name}: over {max_bytes // 1024} KB; a YAML file here is a few KB"], path)
    loader = yaml.SafeLoader(raw.decode("utf-8"))
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError([f"{path.name}: expands to over {MAX_YAML_NODES:,} values through aliases (&, *); "
                               "write the values out"], path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        raise ConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"], path) from exc
    finally:
        loader.dispose()
    return node, data


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_NODES + 1  # a node reached again while being measured: a cycle, refused
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_YAML_NODES + 1)
    return memo[id(node)]


# --- locating keys in the YAML source ------------------------------------------------------

def _lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path ("recipes", "starry", "size") to its 1-based line in the file."""
    found: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            found[path] = key.start_mark.line + 1
            found.update(_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found[prefix + (index,)] = item.start_mark.line + 1
            found.update(_lines(item, prefix + (index,)))
    return found


class _Problems:
    """Collects every error at once: one run of `validate` should show them all."""

    def __init__(self, source: Path, lines: dict[tuple, int]) -> None:
        self.source, self.lines, self.found = source, lines, []

    @property
    def items(self) -> list[str]:
        """In file order, as a person reads the file (stable for problems on one line)."""
        return [text for _, text in sorted(self.found, key=lambda item: item[0])]

    def add(self, path: tuple, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        dotted = ".".join(map(str, path)) or "(top)"
        self.found.append((line, f"{self.source.name}:{line}: {dotted}: {message}"))

    def unknown(self, path: tuple, data: dict, allowed: set | frozenset) -> None:
        for key in data:
            if key not in allowed:
                guess = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else f"; allowed: {', '.join(sorted(allowed))}"
                self.add(path + (key,), f"unknown key{hint}")


def _check_type(value: Any, hint: Any) -> str | None:
    """A message when ``value`` does not fit the dataclass annotation ``hint``."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        return None if value in choices else f"must be one of {', '.join(map(str, choices))} (got {value!r})"
    if origin is tuple:
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return None if ok else f"must be a list of numbers (got {value!r})"
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be a whole number (got {value!r})"
    if hint in (float, float | None):
        if value is None and hint is not float:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be a number (got {value!r})"
    if hint is str:
        return None if isinstance(value, str) else f"must be text (got {value!r})"
    return None


SETTING_HINTS = typing.get_type_hints(Settings)


def engine_settings(data: dict, path: tuple, problems: _Problems, base: Settings) -> Settings:
    """Typed, range-checked Settings from a YAML mapping; problems are collected, not raised."""
    values = {}
    for key, value in data.items():
        if key not in ENGINE_KEYS:
            continue
        message = _check_type(value, SETTING_HINTS[key])
        if message:
            problems.add(path + (key,), message)
        else:
            values[key] = tuple(value) if isinstance(value, list) else value
    try:
        settings = base.replace(**values)
        settings.validate()
        return settings
    except ValueError as exc:
        problems.add(path + (str(exc).split()[0],), str(exc))
        return base


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


def read_setting(path: str | Path, key: str) -> Any:
    """One top-level value, unchecked (`install-service` asks whether `notify:` is set)."""
    return _read_mapping(path)[1].get(key)


def load(path: str | Path) -> Config:
    """Read and validate config.yaml; raise ConfigError listing every problem with its line."""
    from .config_build import build

    source = Path(path).resolve()
    try:
        node, data = read_yaml(source, CONFIG_MAX_BYTES)
    except OSError as exc:
        fix = missing_config_fix(source) if isinstance(exc, FileNotFoundError) else None
        raise ConfigError([f"cannot read the file ({exc.strerror})"], source, fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source.name}: not UTF-8 text ({exc.reason})"], source) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{source.name}:1: the file must be a mapping of settings"], source)
    problems = _Problems(source, _lines(node) if node else {})
    config = build(source, data, problems)
    if problems.items:
        raise ConfigError(problems.items, source)
    assert config is not None
    return config
