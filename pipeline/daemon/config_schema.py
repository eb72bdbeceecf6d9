"""The manifest's schema: the Config dataclass and its parts, the keys each mapping allows (ConfigError: errors.py).

Kept apart from the reading (yaml_read.py) and the building (config_build.py) so that each of them imports this
downward and none imports the other back: config.py -> config_build.py -> yaml_read.py -> config_schema.py.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
import types
import typing
from typing import Any, Literal

from ..engine.settings import Settings
from ..fsio import nfc
# Per-photo overrides a sidecar may set: what changes the look, not what loads the machine.
SIDECAR_KEYS = frozenset({"recipe", "size", "steps", "style_strength", "content_weight", "style_weight", "tv_weight",
                          "preserve_color", "seed", "init", "style_scale", "format", "quality", "print_dpi"})
ENGINE_KEYS = frozenset(f.name for f in dataclasses.fields(Settings)) - {"device"}
RECIPE_KEYS = ENGINE_KEYS | {"styles", "description"}
STYLE_KEYS = frozenset({"path", "weight"})  # a style written as a mapping: {path: NAME, weight: NUMBER}
FOLDER_KEYS = {"inbox", "outbox", "spool"}  # each folder's default is its key: ./inbox, ./outbox, ./spool
DEFAULT_STYLES_DIR = "styles"  # the build and install-service's read-only path alike
REPORTS = "reports"  # outbox/reports/: the morning reports (pruned by age), so no recipe may take the name


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
    """The validated config.yaml, frozen: a reload builds a new one and swaps it whole, so a running job never sees
    half an edit (the next job reads the new one)."""

    path: Path
    inbox: Path
    outbox: Path
    spool: Path
    recipes: dict[str, Recipe]
    default_recipe: str
    styles_dir: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    watch: Literal["auto", "native", "polling"] = "auto"
    settle_seconds: float = 2.0
    rescan_seconds: float = 60.0
    poll_seconds: float = 2.0
    after_success: Literal["move", "delete"] = "move"
    max_attempts: int = 3
    max_crashes: int = 3  # the daemon died this many times in a row inside one job: failed/ as crashed_daemon
    retry_backoff_seconds: float = 30.0
    device: str = "auto"
    weights: Path | None = None
    cache_styles: int = 32
    max_size: int = 4096
    schedule: dict | None = None
    contact_sheet: bool = True
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    progress_seconds: float = 5.0
    stall_seconds: float = 600.0
    executor: Literal["local", "ray"] = "local"  # issue 6: "local" (the in-process Worker) or "ray"
    ray: RayOptions = field(default_factory=RayOptions)
    save_every: int = 0  # write the current picture every N steps into the job's folder; 0 = off
    metrics_file: Path | None = None  # the Prometheus textfile; None = off (build() defaults it under the spool)
    metrics_seconds: float = 5.0
    notify: str | None = None  # a command or URL told when the queue empties after work and on each failure
    devices: tuple[str, ...] | None = None  # issue 13: one executor slot per entry; None: one per visible GPU
    batch: int | None = None  # issue 13: photos of one recipe and shape per network pass; None = auto (1 off CUDA)
    # Not a config key: recipes a reload took away while the daemon runs; their photos fail, not take the default.
    removed_recipes: frozenset[str] = frozenset()

    @property
    def work(self) -> Path:
        return self.spool / "work"

    @property
    def done(self) -> Path:
        return self.spool / "done"

    @property
    def failed(self) -> Path:
        return self.spool / "failed"

    def recipe_named(self, name: str | None) -> str | None:
        """The recipe ``name`` (an inbox folder, a sidecar's ``recipe:``) names, as config.yaml spells it; None for
        none. The one place recipe names are compared: see ``named``."""
        return named(name, self.recipes)

    def recipe_settings(self, recipe: Recipe, overrides: dict[str, Any]) -> Settings:
        settings = recipe.settings.overlaid({**overrides, "device": self.device})  # the sidecar's layer wins
        settings.validate()
        return settings


def named(name: str | None, names: typing.Iterable[str]) -> str | None:
    """The one of ``names`` that ``name`` spells, compared in Unicode's composed form (NFC): a Mac's copy of
    inbox/café/ is often NFD ("e" and a combining accent) where config.yaml typed café in NFC; compared by bytes,
    its photos were styled with the default recipe without a word (mend10c). The exact spelling wins first. A name
    that is not text (a sidecar's `recipe: 5`) names none: the caller says "no recipe named 5" (rev10e)."""
    if not isinstance(name, str):
        return None
    names = list(names)
    if name in names:
        return name
    return next((known for known in names if nfc(known) == nfc(name)), None)


# --- the schema, derived once from the Config fields above -------------------------------------------------

FOLDERS_AND_PATH = {"path", "inbox", "outbox", "spool"}  # the config's own path, and the three under `folders:`
# each checked by its own step
STRUCTURED = {"recipes", "styles_dir", "defaults", "schedule", "weights", "ray", "devices", "batch"}
RUNTIME = {"removed_recipes"}  # kept by the running daemon, never read from config.yaml


def _yaml_hint(hint: Any) -> Any:
    """The type a YAML value must have for a field: ``X | None`` -> X, a Path is written as text."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return str if hint is Path else hint


TOP_KEYS = {f.name for f in dataclasses.fields(Config)} - FOLDERS_AND_PATH - RUNTIME | {"folders"}
TOP_TYPES: dict[str, Any] = {name: _yaml_hint(hint) for name, hint in typing.get_type_hints(Config).items()
                             if name not in FOLDERS_AND_PATH | STRUCTURED | RUNTIME}


def recipe_guess(folder: str, recipes: dict[str, Recipe], cutoff: float = 0.85) -> str | None:
    """The recipe a name (an inbox folder, a sidecar's ``recipe:``) is a typo of, matched regardless of case:
    case-sensitively 'Scream' scores 0.83 against 'scream', under the cutoff, and a folder named in title case (as
    Finder and Explorer suggest) was taken for an album and styled with the default recipe, unsaid (rev7a). A
    sidecar's ``recipe:`` is meant as a recipe and fails anyway, so it is matched as loosely as an unknown key
    (difflib's 0.6: `recipe: screem` scores 0.83 and had no guess, rev11b); a folder strictly, since any other name is
    an album. Two recipes differing only by case are refused at validate (config_build._case_twins), so the
    case-blind map has one name per key."""
    lowered = {name.casefold(): name for name in recipes}
    guess = difflib.get_close_matches(folder.casefold(), list(lowered), n=1, cutoff=cutoff)
    return lowered[guess[0]] if guess else None
