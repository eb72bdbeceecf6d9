"""`style-pipeline precision [--probe]`: what `precision: auto` means on this machine, and measuring it.

Why a command: the probe (engine/precision.py) takes seconds on a GPU and a minute or two on a slow CPU, too long
for a daemon's start; an operator runs it once per machine and torch upgrade (``make bench-gpu`` runs it too), and
every later start reads the record.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UsageError

ASSETS = Path(__file__).resolve().parent / "assets"
CONTENT, STYLE = ASSETS / "samples" / "astronaut.jpg", ASSETS / "styles" / "starry_night.jpg"


def register(sub: argparse._SubParsersAction) -> None:
    text = "what precision: auto resolves to on this device; --probe measures fp32/tf32 against bf16 and records it"
    p = sub.add_parser("precision", help=text, description=text)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--probe", action="store_true", help="measure now and record the choice for this device")
    p.add_argument("--size", type=int, default=None, help="probe size in px (default: 512 on CUDA, 64 on a CPU)")
    p.add_argument("--steps", type=int, default=None, help="steps of the same-steps runs (default: 30 / 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed loss passes per precision (median)")
    p.set_defaults(func=cmd_precision)


MIN_SIZE = 32  # VGG19's five poolings: a smaller probe image ends in torch's "Output size is too small"


def check_numbers(args) -> None:
    """A UsageError one-liner for a probe that cannot run: `--repeats 0` ended in statistics' median of nothing
    and `--size 5` in torch's RuntimeError, both tracebacks (rev9f #4); `--steps 0` was taken silently as the
    default (`or`) and recorded as steps 10."""
    for flag, value, least in (("--repeats", args.repeats, 1), ("--steps", args.steps, 1),
                               ("--size", args.size, MIN_SIZE)):
        if value is not None and value < least:
            raise UsageError(f"precision {flag} {value}: at least {least}")


def cmd_precision(args) -> int:
    check_numbers(args)
    from .engine import images
    from .engine import precision
    from .engine.device import pick_device

    device = pick_device(args.device)
    if not args.probe:
        recorded = precision.recorded(device)
        print(f"{precision.key(device)}: precision auto = {precision.resolve(device, 'auto')} "
              f"({'recorded in ' + str(precision.record_path()) if recorded else 'the default: nothing recorded'})")
        return 0
    from .engine import StyleTransfer

    engine = StyleTransfer(device=str(device))
    measured = precision.probe(engine, images.load(CONTENT), images.load(STYLE), args.size, args.steps, args.repeats)
    path = precision.write_record(device, measured)
    print(json.dumps({"device": precision.key(device), **measured}, indent=2))
    print(f"precision auto = {measured['choice']}: {measured['why']}; "
          + (f"recorded in {path}" if path else "NOT recorded (the cache folder is off or cannot be written)"))
    return 0
