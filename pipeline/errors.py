"""The project's one error vocabulary: the Reason codes, one base exception, a few subclasses.

Every error that reaches a person says which file (or setting) is at fault and what to do about it. A problem is
classified where it is known: the code that finds a picture too large raises an ImageError carrying
Reason.TOO_LARGE, so no caller decides by reading the message.
"""
from __future__ import annotations

import enum
from pathlib import Path


MESSAGE_CAP = 500  # characters of an exception's text kept in a job's record and its .error.json


def clipped(message: str) -> str:
    """``message`` cut to MESSAGE_CAP characters: a library's error text can run to pages (a torch traceback, a
    whole tensor printed), and it lands in job.json, failed/'s .error.json and the notices, once per try."""
    return message[:MESSAGE_CAP]


class Reason(enum.StrEnum):
    """Stable codes for failed/'s .error.json and the notices, so scripts can sort them without parsing
    sentences."""

    NOT_REGULAR = "not_a_regular_file"
    EMPTY = "empty_file"
    BAD_IMAGE = "bad_image"
    TOO_LARGE = "too_large"
    TOO_THIN = "too_thin"
    BAD_SIDECAR = "bad_sidecar"
    UNKNOWN_RECIPE = "unknown_recipe"
    STYLE_UNREADABLE = "style_unreadable"  # the recipe's painting, removed or damaged under a running daemon
    ENGINE = "engine_failed"
    GAVE_UP = "too_many_attempts"
    NO_PERMISSION = "permission_denied"  # also a folder the service user cannot write (folder_faults.py)
    CRASHED = "crashed_daemon"
    BAD_JOB_RECORD = "bad_job_record"  # a photo found in work/ beside a damaged, missing or foreign job.json (rev12a)
    # A folder fault's own codes (the `paused` notice and the log's reason; folder_faults.py): never a photo's
    # failure, so never in failed/ nor in the metrics' failures (FAILURES). They were bare strings outside this
    # vocabulary (rev9d item 12); the strings are as they were.
    READ_ONLY = "EROFS"
    NOT_A_FOLDER = "ENOTDIR"
    CANNOT_WRITE = "cannot_write"  # a folder's write refused for a cause no fix is known for (EIO: rev10e)


FOLDER_ONLY = frozenset({Reason.READ_ONLY, Reason.NOT_A_FOLDER, Reason.CANNOT_WRITE})
FAILURES = tuple(reason for reason in Reason if reason not in FOLDER_ONLY)  # the codes a photo can fail with


class PipelineError(Exception):
    """Base for every error this project raises on purpose."""

    code = "error"
    reason: Reason | None = None  # set on the errors that fail one input for good; None: not the input's fault

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str = "",
                 reason: Reason | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.fix = fix
        self.problem = message
        if reason is not None:
            self.reason = reason
        text = f"{path}: {message}" if path is not None else message
        super().__init__(f"{text}. {fix}" if fix else text)


class ImageError(PipelineError):
    """An input image that can never be processed as it is (permanent)."""

    code = "bad_image"
    reason = Reason.BAD_IMAGE  # or TOO_LARGE, given where the size is checked


class TooThin(ImageError):
    """A picture too thin for the network even when padded: permanent, since a retry cannot help (issue 9)."""

    code = "too_thin"
    reason = Reason.TOO_THIN


class WeightsError(PipelineError):
    """The VGG weights are missing or unreadable."""

    code = "weights"


class DeviceError(PipelineError):
    """The device asked for is not a device, or does not exist on this machine."""

    code = "device"


class EngineError(PipelineError):
    """The optimisation failed (NaN, blank result) even after its retry."""

    code = "engine"
    reason = Reason.ENGINE


class ReportNotWritten(PipelineError):
    """The morning page could not be written (a full disk, no permission): one line, never a traceback."""

    code = "report_not_written"


class JobFailure(PipelineError):
    """A permanent problem with one input found by a pre-check: it goes to failed/ with this reason and fix."""

    code = "job_failed"

    def __init__(self, reason: Reason, message: str, fix: str) -> None:
        super().__init__(message, fix=fix, reason=reason)


class WorkerLost(Exception):
    """A remote worker (a Ray actor, or its node) died while it held a job: not the job's fault, so not a
    PipelineError with a reason; the try is retried elsewhere, up to max_attempts."""


class SettingsError(PipelineError, ValueError):
    """A Settings value out of range: names the field, so a config, sidecar or flag can point at its line.

    A ValueError too, for callers that check values generally.
    """

    code = "bad_setting"

    def __init__(self, field: str, message: str, fix: str = "") -> None:
        self.field, self.own_fix = field, bool(fix)  # own_fix False: the entry point may say where (cli._flags)
        super().__init__(message, fix=fix or f"Change {field} in the config, the sidecar or the command line")


class UsageError(PipelineError, ValueError):
    """A value a person wrote that cannot be read: a flag (`report --since 12x`, `install-service --report-at 25:99`)
    or a config key outside Settings (schedule). A PipelineError, so the CLI prints it as one line; the CLI catches
    no bare ValueError, which would hide a real bug's traceback (rev9d). A ValueError too, for callers that check
    values generally."""

    code = "usage"


class ConfigError(PipelineError):
    """config.yaml (or a sidecar) is invalid: ``problems`` lists every one, each with its line, so one edit fixes
    them all; the fix names the command that checks again."""

    code = "bad_config"

    def __init__(self, problems: list[str], path: str | Path, fix: str | None = None) -> None:
        self.problems = problems
        fix = fix or f"Fix the lines above, then check again: style-pipeline validate --config {path}"
        super().__init__("\n  ".join(["invalid configuration:", *problems]) + "\n" + fix, path=path)
        self.fix = fix


class StartupError(PipelineError):
    """The daemon itself cannot work (bad config, unwritable folder, no weights): `run` exits 2 with this message,
    and systemd does not restart it in a loop (a retry cannot fix the config)."""

    code = "startup"


class RayUnavailable(PipelineError):
    """The Ray cluster cannot be reached or cannot host one worker: the daemon cannot start (executor: ray)."""

    code = "ray_unavailable"


class SpoolLocked(PipelineError):
    """Another process holds the lock of a job folder this daemon just made: another daemon on the same spool was
    looking at it (its start-up recovery). Not the photo's fault: it stays in the inbox and is claimed again."""

    code = "spool_locked"


class NonFinite(Exception):
    """The loss or its gradient became NaN/inf. Loop control inside the engine, like Cancelled: a lone run retries
    gentler and a batch sends the photo alone; what reaches a person is the EngineError after that."""


class Cancelled(Exception):
    """A caller's should_stop() asked the engine to stop; the checkpoint (if any) is written.

    Not a PipelineError: it is loop control, like rq's StopRequested.
    """

    def __init__(self, step: int, checkpoint: str | None) -> None:
        super().__init__(f"cancelled at step {step}")
        self.step = step
        self.checkpoint = checkpoint
