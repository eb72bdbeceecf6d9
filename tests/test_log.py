"""Issue 11 item 13: under systemd every log line carries its syslog priority, so `journalctl -p warning` finds a
failed job. Real daemons: `once` with stderr on a file that JOURNAL_STREAM names, as systemd sets it up."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT, make_config


def _once(config: Path, log: Path, journal: bool) -> list[str]:
    with open(log, "wb") as handle:
        st = os.fstat(handle.fileno())
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        result = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=handle, cwd=ROOT, env=env, timeout=240)
    assert result.returncode == 0, log.read_text()[-2000:]
    return log.read_text().splitlines()


def test_journal_lines_carry_their_priority(tmp_path):
    config = make_config(tmp_path)
    (tmp_path / "inbox" / "oops.png").write_text("not a picture")
    lines = _once(config, tmp_path / "journal.log", journal=True)
    assert lines and all(re.match(r"<[0-7]>\{", line) for line in lines), lines
    failed = [line for line in lines if '"job failed"' in line]
    assert failed and all(line.startswith("<4>") for line in failed), lines  # warning: shown by -p warning
    assert any(line.startswith("<6>") and '"watching"' not in line for line in lines)  # info stays info


def test_no_prefix_when_journal_stream_names_another_file(tmp_path):
    """A JOURNAL_STREAM inherited by a process whose stderr was redirected must not add prefixes."""
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    code = "from pipeline.daemon import log; log.configure(); log.get().warning('job failed', reason='x')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with open(tmp_path / "err", "wb") as handle:
        subprocess.run([sys.executable, "-c", code], stderr=handle, cwd=ROOT, env=env, timeout=60, check=True)
    line = (tmp_path / "err").read_text()
    assert line.startswith('{"') and '"job failed"' in line, line
