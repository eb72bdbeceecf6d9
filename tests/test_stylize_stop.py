"""rev12b: Ctrl-C on `stylize --checkpoint` said "interrupted", exit 130, and wrote no checkpoint, so the work since
the last scheduled one (up to 25 steps and 30 s; a large print's ~54 min) was lost, where every daemon stop writes
one. Now the first Ctrl-C stops the engine after its step, which saves as the daemon's stop does; a second exits."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.interrupts import StopOnSignal

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "pipeline" / "assets" / "samples" / "coffee.jpg"
PAINTING = ROOT / "pipeline" / "assets" / "styles" / "starry_night.jpg"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
STEP = re.compile(r"^step (\d+)/(\d+) ")


def _as_from_a_terminal() -> None:
    """The child's SIGINT as a terminal's command has it: pytest-xdist's workers ignore SIGINT, a child inherits
    an ignored signal across exec, and stylize leaves an ignored signal ignored (interrupts.ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted(command: list[str], sig: int = signal.SIGINT) -> tuple[int, int, str]:
    """Run ``command``, send ``sig`` once its first progress line is out (the engine is running then), and return
    (the step of that line, the exit status, what it said after)."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, env=ENV,
                            preexec_fn=_as_from_a_terminal)
    first = None
    for line in proc.stderr:
        if match := STEP.match(line):
            first = int(match.group(1))
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=240)  # a hang guard, not a measure
    assert first is not None, f"no progress line; it said: {rest[-1500:]}"
    return first, proc.returncode, rest


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes_from_it(tmp_path):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.png"
    command = [sys.executable, "-m", "pipeline.cli", "stylize", str(PHOTO), str(PAINTING), "--size", "32",
               "--steps", "400", "--early-stop-tol", "0", "--progress-seconds", "0", "--checkpoint", str(ckpt),
               "-o", str(out)]
    first, code, said = _interrupted(command)
    assert code == 130, said
    stopped = re.search(r"stopped at step (\d+): checkpoint saved to (.+); run the same command to resume", said)
    assert stopped and Path(stopped.group(2)) == ckpt and ckpt.is_file(), said
    assert int(stopped.group(1)) >= first and not out.exists()
    # The same command: its first step is the one after the checkpoint's, not step 1; stopped again, it saves on.
    again, code, said = _interrupted(command, signal.SIGTERM)
    assert again == int(stopped.group(1)) + 1, (again, stopped.group(1))
    assert code == 143 and f"checkpoint saved to {ckpt}" in said, said


def test_without_a_checkpoint_ctrl_c_says_how_to_keep_the_work(tmp_path):
    """Nothing to save: the first Ctrl-C exits at once as before, and says what would have kept the work."""
    command = [sys.executable, "-m", "pipeline.cli", "stylize", str(PHOTO), str(PAINTING), "--size", "32",
               "--steps", "400", "--early-stop-tol", "0", "--progress-seconds", "0", "-o", str(tmp_path / "o.png")]
    _, code, said = _interrupted(command)
    assert code == 130 and "give --checkpoint FILE to be able to resume" in said, said


@pytest.fixture
def sigint_as_python_starts():
    """SIGINT raising KeyboardInterrupt, as in a command run from a terminal, whatever the test runner set (an
    xdist worker ignores it); put back after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_the_handler_only_sets_a_flag_and_a_second_ctrl_c_raises_at_once(sigint_as_python_starts):
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert not stop()
        signal.raise_signal(signal.SIGINT)  # its handler has run when raise_signal returns
        assert stop() and stop.exit_code == 130
        assert signal.getsignal(signal.SIGINT) is before_int  # the second one is Python's KeyboardInterrupt again
        assert signal.getsignal(signal.SIGTERM) is not before_term  # still the flag's (a SIGTERM now is no harm)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before_term


def test_a_signal_the_run_was_started_ignoring_stays_ignored(sigint_as_python_starts):
    """`stylize ... &` from a script (no job control) starts with SIGINT ignored, meant to outlive the terminal's
    Ctrl-C; the stop's handler took its place, so that Ctrl-C stopped the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with StopOnSignal() as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        assert not stop()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
