"""The pre-checks a job passes before anything runs, as named steps (as paperless-ngx's consumer does).

Each step looks at one thing, in the order JobLife.prepare (jobs.py) calls them, and raises a JobFailure with its own
reason and fix, so failed/'s .error.json says what is wrong with the file and what to do. FileBusy passes up
untouched: a photo or sidecar still leased by its writer waits, it is not the file's fault (jobs.JobLife.conclude).
Kept apart from the job's life so each can be read (and tested) alone (rev7e finding 7).
"""
from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path

import structlog

from ..engine import Settings, images
from ..errors import ImageError, JobFailure, Reason, SettingsError
from ..fsio import FileBusy, NotRegularFile, open_regular, service_user
from .config import Config, ConfigError, Recipe
from .config_schema import named, recipe_guess
from .config_build import load_sidecar
from .spool import Job, job_id_in

log = structlog.get_logger("style-pipeline.worker")


def not_regular(link: bool) -> JobFailure:
    """One reason and fix for a link or special file, whether lstat saw it or the open did (swapped in between)."""
    if link:
        return JobFailure(Reason.NOT_REGULAR, "is a symbolic link; links are never followed",
                          "Copy the picture itself into the inbox")
    return JobFailure(Reason.NOT_REGULAR, "is not a regular file", "Drop a picture file")


def pre_check_record(job: Job, config: Config) -> None:
    """A photo found in work/ beside a job record that could not be used (spool.Spool._left_in) is never styled: its
    recipe folder and whether its output was written went with the record. failed/, saying what to do; when an
    output's log in the outbox names its job, it was styled before the record was damaged, and the fix says so."""
    if not job.record_error:
        return
    written = styled_before(config.outbox, job)
    fix = (f"It was styled already ({written} names its job {job.id}): nothing to do, or drop it again for a second "
           "version" if written else f"Move {job.name} (with its sidecar, if any) back to the inbox, into its "
           "recipe's folder, to style it")
    raise JobFailure(Reason.BAD_JOB_RECORD, f"its job record {config.work / job.id / 'job.json'} {job.record_error}; "
                     "the photo was not styled and is kept in failed/", fix + "; if records keep being damaged, check the "
                     "disk that holds the spool")


def styled_before(outbox: Path, job: Job) -> Path | None:
    """The output log in the outbox naming ``job`` (its stems start as the photo's name does: outputs.py)."""
    try:
        for path in outbox.rglob(f"{glob.escape(Path(job.name).stem[:16])}*.json"):
            if job_id_in(path) == job.id:
                return path
    except OSError:
        pass
    return None


def pre_check_regular_file(job: Job) -> None:
    """Symlinks, FIFOs and devices are never opened: a link out of the inbox must not be read."""
    st = os.lstat(job.input)
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(stat.S_ISLNK(st.st_mode))
    if st.st_size == 0:
        raise JobFailure(Reason.EMPTY, "is empty (0 bytes)", "The copy did not finish; drop the file again")


def pre_check_readable(job: Job) -> None:
    """An unreadable photo is a permissions problem, not a broken picture: the fix is chmod, not a new copy.
    FileBusy (a lease not let go in fsio.BUSY_WAIT) passes up: the job waits, no attempt charged (conclude)."""
    try:
        open_regular(job.input).close()  # never waits on a FIFO, whatever is there by now
    except NotRegularFile as exc:  # swapped in since pre_check_regular_file looked
        raise not_regular(exc.errno == errno.ELOOP) from exc
    except PermissionError as exc:
        raise JobFailure(Reason.NO_PERMISSION, f"the service user {service_user()} cannot read it ({exc.strerror})",
                         f"Make {job.source} readable (chmod a+r, or chown to the service user) and drop it "
                         "again") from exc


def pre_check_sidecar(job: Job, config: Config) -> tuple[str | None, dict]:
    """A photo.yaml beside the photo may pick a recipe and override whitelisted settings."""
    if not job.sidecar:
        return None, {}
    if job.sidecar_error:  # the claim could not copy it (spool_sidecar.copy_in)
        raise JobFailure(Reason.BAD_SIDECAR, f"the sidecar {job.sidecar} {job.sidecar_error}; it was not read",
                         f"Save {job.sidecar} as a plain YAML file the service user can read (not a link, FIFO or "
                         f"folder) and {_again(config, False)}")
    try:
        return load_sidecar(job.dir / job.sidecar, config)
    except ConfigError as exc:
        raise JobFailure(Reason.BAD_SIDECAR, "; ".join(exc.problems),
                         f"Fix {job.sidecar} and {_again(config, True)}") from exc
    except NotRegularFile as exc:  # swapped in after the watcher paired it; never waited on (fsio.open_regular)
        raise JobFailure(Reason.BAD_SIDECAR, f"the sidecar {job.sidecar} {exc.strerror}; it was not read",
                         f"Save {job.sidecar} as a plain YAML file (not a link, FIFO or folder) and "
                         f"{_again(config, False)}") from exc
    except FileBusy:  # its writer (Samba, NFS) still holds it: the job waits, uncharged (conclude)
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFailure(Reason.BAD_SIDECAR, f"cannot read the sidecar {job.sidecar} ({exc})",
                         "Save the sidecar as UTF-8 YAML") from exc


def _again(config: Config, both: bool) -> str:
    """Where the pair is to drop again: "drop the photo and its sidecar again" left a person looking in the inbox,
    where neither was any more (rev12b). ``both``: the sidecar was read (copied in), so it fails beside the photo."""
    where = f"both are in {config.failed} now" if both else f"the photo is in {config.failed} now"
    return f"drop the photo and its sidecar into the inbox again ({where})"


def pre_check_recipe(job: Job, config: Config, from_sidecar: str | None) -> Recipe:
    """Sidecar, then the first inbox folder when it names a recipe, then the default recipe.

    Any other folder (an album copied in) takes the default recipe, except one a typo away from a recipe
    name (``stary/``) or one a reload removed (its photos were meant for that recipe): styling a batch with the
    wrong recipe all night is worse than saying so at once.
    """
    folder = job.recipe_folder
    recipe = config.recipe_named(folder)
    if from_sidecar is None and recipe is None and named(folder, config.removed_recipes) is not None:
        raise JobFailure(Reason.UNKNOWN_RECIPE, f"{job.source}: the recipe {folder!r} (from the folder inbox/{folder}/) "
                         "was removed from the config by a reload", "restore the recipe in config.yaml or move the "
                         "photo to another recipe's folder")
    if from_sidecar is None and folder and recipe is None:
        guess = recipe_guess(folder, config.recipes)
        if guess:
            raise JobFailure(Reason.UNKNOWN_RECIPE, f"no recipe named {folder!r} (from the folder inbox/{folder}/)",
                             f"did you mean {guess!r}? Rename the folder; recipes: {', '.join(config.recipes)}")
    return config.recipes[from_sidecar or recipe or config.default_recipe]


def pre_check_settings(job: Job, config: Config, recipe: Recipe, overrides: dict) -> Settings:
    try:
        return config.recipe_settings(recipe, overrides)
    except SettingsError as exc:
        raise JobFailure(Reason.BAD_SIDECAR, f"the settings are invalid: {exc.problem}",
                         f"Fix {exc.field} in the sidecar") from exc


def pre_check_image(job: Job, settings: Settings) -> images.Image.Image:
    """The photo, decoded; a file of several pages (a multi-page scan) is styled from its first, and says so: the
    night's result silently lacked the other pages (rev9c). The JSON log records them too (input.frames)."""
    try:
        content = images.load(job.input, settings.max_pixels)
    except ImageError as exc:
        raise JobFailure(exc.reason, exc.problem, exc.fix) from exc
    if images.frames(content) > 1:
        log.warning("only the first page is styled", file=job.source, pages=images.frames(content),
                    fix=f"split {job.name} into one picture a page and drop those to style the others")
    return content



def pre_check_painting(path: Path) -> os.stat_result:
    """The recipe's painting is still there (its stat, for JobLife.style's cache). Renamed or removed under a
    running daemon (someone tidies the styles share at night; config.yaml did not change, so nothing reloads), its
    FileNotFoundError was retried as a machine fault, and each photo of the recipe failed as too_many_attempts with
    "drop the file again", naming neither the painting nor the fix (rev9c). It fails at once, as a photo of a
    recipe a reload removed does: nothing styles it until a person acts, and failed/ keeps it with the fix, where a
    wait would hide it from the morning report. A painting whose folder is gone too (a share not mounted) is
    still a fault of the machine's, retried."""
    try:
        return path.stat()
    except FileNotFoundError as exc:
        if not path.parent.is_dir():
            raise
        raise JobFailure(Reason.STYLE_UNREADABLE, f"its recipe's painting {path} is no longer there (renamed or "
                         "removed while the daemon ran)", f"Put {path.name} back in {path.parent}, or name another "
                         "painting in config.yaml's recipe; then drop the photo again") from exc


def pre_check_painting_decodes(path: Path, max_pixels: int) -> images.Image.Image:
    """The recipe's painting, decoded. One replaced by a cut-short or damaged copy under a running daemon failed the
    photo as bad_image with "copy it again", naming neither the painting nor which file to copy (rev9c): the
    failure names the painting, and fails as style_unreadable, the photo being whole (its own reason: scripts sorting
    failed/ told it from a mistyped recipe folder by reading the sentence)."""
    try:
        return images.load(path, max_pixels)
    except ImageError as exc:
        fix = exc.fix[:1].lower() + exc.fix[1:]
        raise JobFailure(Reason.STYLE_UNREADABLE, f"its recipe's painting {path}: {exc.problem}",
                         f"The painting {path.name} in {path.parent}: {fix}; or name another painting in "
                         "config.yaml's recipe; then drop the photo again") from exc
