"""`style-pipeline init DIR`: a new install that needs nothing from the source tree.

It writes the starter config (the shipped config.yaml, with styles_dir pointing at DIR/styles), copies the shipped
styles there, validates the result and makes the folders, so `run` and `install-service` work on it at once.
"""
from __future__ import annotations

from pathlib import Path

from .errors import PipelineError
from .fsio import write_atomic

PACKAGE = Path(__file__).resolve().parent
STARTER = PACKAGE / "templates" / "config.yaml"
SHIPPED_STYLES = PACKAGE / "assets" / "styles"


def init_dir(target: Path) -> Path:
    """Set up target and return its config path; never overwrites a config or a style that is already there."""
    from .daemon.config import ConfigError, load
    from .daemon.config_build import check_folders
    from .daemon.running import RUNTIME_DIR

    target = target.resolve()
    config_path = target / "config.yaml"
    if config_path.exists():
        raise PipelineError("a config is already there", path=config_path,
                            fix="Keep it (check it with `style-pipeline validate`), or init another folder")
    try:
        (target / "styles").mkdir(parents=True, exist_ok=True)
        # The running-folders record's folder (daemon/running.py), made now: under the service's ProtectSystem=strict
        # the daemon could not make it beside the config itself (rev8e).
        (target / RUNTIME_DIR).mkdir(exist_ok=True)
        _copy_styles(target / "styles")
        write_atomic(STARTER.read_bytes(), config_path, replace=False)  # never over one made meanwhile
    except OSError as exc:
        raise PipelineError(f"cannot write there ({exc.strerror})", path=exc.filename or target,
                            fix="Pick a folder you can write to") from exc
    try:
        config = load(config_path)
    except ConfigError as exc:  # the shipped starter itself is broken: a bug, but say it plainly
        raise PipelineError(f"the starter config does not validate: {exc}", path=config_path) from exc
    problems = check_folders(config)
    if problems:
        raise PipelineError("cannot make the folders: " + "; ".join(problems), path=target)
    return config_path


def _copy_styles(folder: Path) -> None:
    """Each shipped painting through the atomic helper, never over one already there. Why: a plain copy cut short
    (a kill, a full disk) left a truncated painting under its final name, which the next init skipped as present
    and validate or the daemon then refused, a painting the person never touched (rev9d item 8); link(2) also
    closes the gap between "is it there?" and the copy."""
    for style in sorted(SHIPPED_STYLES.iterdir()):
        try:
            write_atomic(style.read_bytes(), folder / style.name, replace=False)
        except FileExistsError:
            continue  # the person's own (or an earlier init's) stays
