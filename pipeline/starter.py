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


def program() -> str:
    """How to run this program again, for the "Next:" lines: its own script where PATH would not find it (`make
    setup` puts it in .venv/bin, which is not on PATH, so a bare `style-pipeline ...` said "command not found"),
    shown from the current folder where it lies below it (.venv/bin/style-pipeline). Run as `python -m pipeline.cli`
    from an interpreter without the script, that."""
    import os
    import shutil
    import sys

    script = Path(sys.executable).parent / "style-pipeline"
    if not script.is_file():
        return f"{sys.executable} -m pipeline.cli"
    found = shutil.which("style-pipeline")
    if found and Path(found).resolve() == script.resolve():
        return "style-pipeline"
    return str(shown_path(script))


def shown_path(path: Path) -> Path:
    """Relative to the current folder where it lies below it (.venv/bin/style-pipeline, pipeline/assets/styles from
    the checkout), else whole."""
    here = Path.cwd()
    return path.relative_to(here) if path.is_relative_to(here) else path


def in_tmp(config: Path) -> str | None:
    """Why `install-service` will refuse this install (under /tmp or /var/tmp, which PrivateTmp=yes hides from the
    service), or None. Said at init, where it is cheap to pick another folder: `init /tmp/x` succeeded without a
    word and only install-service refused it, after the install was set up (rev12b). A warning: a try under /tmp
    with `run` or `once` is fine."""
    from pathlib import PurePosixPath

    from .errors import UsageError
    from .service import not_in_tmp

    try:
        not_in_tmp(PurePosixPath(config.parent), "the install")
    except UsageError as exc:
        return f"{exc}; `run` and `once` work here, but `install-service` refuses it"
    return None
