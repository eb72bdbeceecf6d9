"""Reading YAML with limits, locating each key's line, and collecting problems (every one at once).

Only ``yaml.safe_load``-level constructs are accepted (read by yaml_loader.Loader: YAML 1.2's floats, and a key
written twice refused). Every error says ``file:line: key: what is wrong``,
with a "did you mean" for a misspelt key, so a person can fix it without reading the code.
"""
from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..engine.settings import OUTPUT_FORMATS, Settings
from ..errors import ConfigError, SettingsError
from ..fsio import open_regular
from .config_schema import ENGINE_KEYS
from .yaml_loader import Loader, written_twice

# --- reading YAML with limits ----------------------------------------------------------------

CONFIG_MAX_BYTES = 1 << 20
SIDECAR_MAX_BYTES = 64 << 10
MAX_YAML_NODES = 20_000  # nodes after expanding aliases: a real config has a few hundred


def read_yaml(path: Path, max_bytes: int, busy_wait: float | None = None) -> tuple[yaml.Node | None, Any]:
    """(node, data) from a YAML file, refusing at once what would take the machine's memory.

    A 312-byte file of nested aliases ("billion laughs") expands to millions of nodes when walked;
    here the composed graph is measured with each shared node counted every time it is reached, but
    each node visited once per parent (memoized), so the check itself is linear in the file.
    Raises ConfigError; OSError (NotRegularFile: a FIFO, link or folder, never waited on) and UnicodeDecodeError
    pass through for the caller to name. ``busy_wait``: how long a lease break is waited out (fsio.open_regular).
    """
    with open_regular(path, busy_wait) as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ConfigError([f"{path.name}: over {max_bytes // 1024} KB; a YAML file here is a few KB"], path)
    loader = Loader(raw.decode("utf-8"))  # safe_load's, with YAML 1.2's floats (yaml_loader.py)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError([f"{path.name}: expands to over {MAX_YAML_NODES:,} values through aliases (&, *); "
                               "write the values out"], path)
        twice = written_twice(node) if node is not None else []
        if twice:  # PyYAML keeps the last silently; YAML requires each key once
            raise ConfigError([f"{path.name}:{text}" for text in twice], path)
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

def key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path ("recipes", "starry", "size") to its 1-based line in the file."""
    found: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            found[path] = key.start_mark.line + 1
            found.update(key_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found[prefix + (index,)] = item.start_mark.line + 1
            found.update(key_lines(item, prefix + (index,)))
    return found


class Problems:
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


def finite(value: Any) -> bool:
    """A number, not a bool, and neither inf nor nan. YAML 1.2's floats read `1e400` as infinity (`.inf` and `.nan`
    are YAML's own), and every range check passed them: `settle_seconds: 1e400` passed validate, and nan compares
    false with every bound (rev9f). An int is finite however long (math.isfinite would overflow converting it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def check_type(value: Any, hint: Any) -> str | None:
    """A message when ``value`` does not fit the dataclass annotation ``hint``."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        return None if value in choices else f"must be one of {', '.join(map(str, choices))} (got {value!r})"
    if origin is tuple:
        ok = isinstance(value, list) and all(finite(v) for v in value)
        return None if ok else f"must be a list of finite numbers (got {value!r})"
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be a whole number (got {value!r})"
    if hint in (float, float | None):
        if value is None and hint is not float:
            return None
        kind = "a finite number" if isinstance(value, float) else "a number"  # inf, nan: rev9f
        return None if finite(value) else f"must be {kind} (got {value!r})"
    if hint is str:
        return None if isinstance(value, str) else f"must be text (got {value!r})"
    if origin in (typing.Union, types.UnionType):  # `int | Literal["auto"]`, `str | None`: any one of them
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        found = [check_type(value, arg) for arg in options]
        said = [m.split(" (got")[0].removeprefix("must be ") for m in found if m]
        return None if None in found else f"must be {' or '.join(said)} (got {value!r})"
    return None


SETTING_HINTS = typing.get_type_hints(Settings)
# Sizes written as a bare number (`max_memory: 21474836480`, `max_memory: 20`) go on to the engine's own check as
# text, whose message says which unit to write; the type check alone said only "must be text".
NUMBER_AS_TEXT = frozenset({"max_memory"})


# Each output format by any of its suffixes' names, in any case: `format: jpg` was refused while `stylize -o x.jpg`
# (and the encoder) took it (rev12b); one vocabulary, engine/settings.py's OUTPUT_FORMATS.
FORMAT_SPELLINGS = {suffix.lstrip("."): name for name, (_, *suffixes) in OUTPUT_FORMATS.items() for suffix in suffixes}


def as_setting(key: str, value: Any) -> Any:
    """``value`` as the engine's Settings spell it: a number for a text setting as text, `jpg` as `jpeg`. The config's
    layers and a sidecar's overrides alike (config_build.load_sidecar hands the overrides on as written)."""
    if key in NUMBER_AS_TEXT and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if key == "format" and isinstance(value, str):
        return FORMAT_SPELLINGS.get(value.lower(), value)
    return value


def engine_settings(data: dict, path: tuple, problems: Problems, base: Settings) -> Settings:
    """Typed, range-checked Settings from a YAML mapping; problems are collected, not raised."""
    values = {}
    for key, value in data.items():
        if key not in ENGINE_KEYS:
            continue
        value = as_setting(key, value)
        message = check_type(value, SETTING_HINTS[key])
        if message:
            problems.add(path + (key,), message)
        else:
            values[key] = tuple(value) if isinstance(value, list) else value
    try:
        settings = base.overlaid(values)  # a layer's style_strength clears an inherited style_weight
        settings.validate()
        return settings
    except SettingsError as exc:
        problems.add(path + (exc.field,), exc.problem)
        return base
