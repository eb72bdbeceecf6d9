"""The project's exceptions: one base, a few subclasses with structured fields.

Every error that reaches a person says which file is at fault and what to do about it.
"""
from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Base for every error this project raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str = "") -> None:
        self.path = str(path) if path is not None else None
        self.fix = fix
        self.problem = message
        text = f"{path}: {message}" if path is not None else message
        super().__init__(f"{text}. {fix}" if fix else text)


class ImageError(PipelineError):
    """An input image that can never be processed as it is (permanent)."""

    code = "bad_image"


class TooThin(ImageError):
    """A picture too thin for the network even when padded: permanent, since a retry cannot help (issue 9)."""

    code = "too_thin"


class WeightsError(PipelineError):
    """The VGG weights are missing or unreadable."""

    code = "weights"


class DeviceError(PipelineError):
    """The device asked for is not a device, or does not exist on this machine."""

    code = "device"


class EngineError(PipelineError):
    """The optimisation failed (NaN, blank result) even after its retry."""

    code = "engine"


class Cancelled(Exception):
    """A caller's should_stop() asked the engine to stop; the checkpoint (if any) is written.

    Not a PipelineError: it is loop control, like rq's StopRequested.
    """

    def __init__(self, step: int, checkpoint: str | None) -> None:
        super().__init__(f"cancelled at step {step}")
        self.step = step
        self.checkpoint = checkpoint
