"""Issue 11, items 14-16: intermediate pictures (save_every), the Prometheus textfile, and `notify:`.
Real daemons in-process with the real engine, tiny pictures, few steps."""
from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from daemon_helpers import ROOT, SAMPLES, make_config, wait_for
from pipeline.daemon import status as status_module
from pipeline.daemon.config import ConfigError, load
from pipeline.daemon.daemon import Daemon

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+)$')


def parse_textfile(text: str) -> dict[str, float]:
    """node_exporter's textfile format, strictly: HELP and TYPE before each family's samples."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped") and name not in typed
            typed[name] = kind
        elif line.startswith("#"):
            continue
        else:
            match = SAMPLE.match(line)
            assert match, line
            name = match.group(1)
            family = re.sub(r"_(sum|count)$", "", name) if typed.get(re.sub(r"_(sum|count)$", "", name)) == "summary" else name
            assert family in typed, f"{name} has no TYPE line before it"
            samples[name + (match.group(2) or "")] = float(match.group(3))
    return samples


def _drop(tmp_path, good: int = 1, bad: int = 1) -> None:
    for i in range(good):
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / f"good{i}.jpg")
    for i in range(bad):
        (tmp_path / "inbox" / f"bad{i}.jpg").write_text("not a picture")


def test_metrics_textfile_counts_jobs_by_reason(tmp_path, engine, torch_threads):
    config = make_config(tmp_path, metrics_seconds=0.5)
    _drop(tmp_path, good=2, bad=1)
    before = time.time()
    assert Daemon(config, once=True, engine=engine).run() == 0
    folder = tmp_path / "spool" / "metrics"
    assert [p.name for p in folder.iterdir()] == ["style_pipeline.prom"]  # no temp file left behind
    m = parse_textfile((folder / "style_pipeline.prom").read_text())
    assert m["style_pipeline_jobs_done_total"] == 2 and m["style_pipeline_job_seconds_count"] == 2
    assert m['style_pipeline_jobs_failed_total{reason="bad_image"}'] == 1
    assert m['style_pipeline_jobs_failed_total{reason="engine_failed"}'] == 0
    assert m["style_pipeline_job_seconds_sum"] > 0 and m["style_pipeline_steps_per_second"] > 0
    assert before <= m["style_pipeline_last_success_timestamp_seconds"] <= time.time()
    assert m["style_pipeline_queue_length"] == 0 and m["style_pipeline_gpu_in_use"] == 0
    assert m["style_pipeline_busy"] == 0


def test_metrics_file_can_be_moved_or_turned_off(tmp_path):
    moved = load(make_config(tmp_path / "a", metrics_file="prom/x.prom"))
    assert moved.metrics_file == tmp_path / "a" / "prom" / "x.prom"
    assert load(make_config(tmp_path / "b", metrics_file="")).metrics_file is None


def test_save_every_writes_pictures_beside_the_job_and_status_shows_the_latest(tmp_path, engine, torch_threads):
    config = make_config(tmp_path, save_every=10, defaults={"size": 48, "steps": 400, "early_stop_tol": 0})
    daemon = Daemon(config, engine=engine)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "long.jpg")

        def latest():
            current = status_module.read(load(config)).get("current") or {}
            return current.get("step", 0) >= 25 and current.get("latest_picture")

        path = wait_for(latest, 60)
        job_dir = (tmp_path / "spool" / "work").iterdir().__next__()
        assert path.startswith(str(job_dir)) and re.search(r"step-000[1-9]0\.png$", path)
        saved = sorted(p.name for p in job_dir.glob("step-*.png"))
        assert saved[:2] == ["step-00010.png", "step-00020.png"]
        with Image.open(path) as picture:
            assert max(picture.size) == 48
        assert f"latest picture: {path}" in status_module.render(status_module.read(load(config)))
    finally:
        daemon.stop.set()
        thread.join(60)


def test_notify_command_is_told_each_failure_and_when_the_queue_empties(tmp_path, engine, torch_threads):
    record = tmp_path / "notices.txt"
    script = tmp_path / "note.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(' | '.join(sys.argv[2:]) + '\\n')\n")
    config = make_config(tmp_path, notify=f"{sys.executable} {script} {record} {{event}} {{message}}")
    _drop(tmp_path, good=1, bad=1)
    assert Daemon(config, once=True, engine=engine).run() == 0
    lines = record.read_text().splitlines()
    assert len(lines) == 2 and re.fullmatch(r"queue_empty \| 1 styled, 1 failed since \d\d:\d\d \S+; nothing left in the inbox",
                                            lines[-1]), lines
    assert lines[0].startswith("failed | bad0.jpg: bad_image: ") and "; fix: " in lines[0]


def test_notify_url_gets_a_post(tmp_path, engine, torch_threads):
    got: list[tuple[str, str]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append((self.headers["Title"], self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = make_config(tmp_path, notify=f"http://127.0.0.1:{server.server_port}/night")
        _drop(tmp_path, good=0, bad=1)
        assert Daemon(config, once=True, engine=engine).run() == 0
    finally:
        server.shutdown()
    titles = sorted(title for title, _ in got)
    assert titles == ["style-pipeline: bad0.jpg failed", "style-pipeline: the queue is empty"]
    assert any("0 styled, 1 failed" in body for _, body in got)


def test_notify_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="apprise"):
        load(make_config(tmp_path / "a", notify="mailto://me@example.org"))
    with pytest.raises(ConfigError, match="quotes"):
        load(make_config(tmp_path / "b", notify="notify-send 'unclosed"))


@pytest.mark.parametrize("target, message", [
    ("ntfy.sh/mytopic", "notify: 'ntfy.sh/mytopic' is neither a URL nor a command: a URL needs its scheme, "
                        "e.g. https://ntfy.sh/mytopic; a command, its full path"),
    ("loger -t style-pipeline {message}", "notify: command 'loger' is not found on PATH (/usr/bin:/bin); give its "
                                          "full path (the service looks commands up on systemd's PATH, "),
    ("/usr/bin/loger {message}", "notify: command /usr/bin/loger does not exist or is not executable"),
])
def test_validate_names_a_notify_command_that_is_not_there(tmp_path, target, message):
    """rev7a finding 7: a command no one can run passed `validate`, and every notice of the night was lost to a log
    line. Run as a user would, through `validate`, with a PATH of its own."""
    config = make_config(tmp_path, notify=target)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_validate_tells_a_missing_notify_command_at_its_line_among_the_other_errors(tmp_path):
    """rev8a: README, "Errors name the file and line, in file order". The missing command was told as
    'config.yaml: notify: ...' with no line, and only once every other problem was fixed: a typo on line 1 and a
    missing notify command showed the typo alone. Now both, at their lines, in file order, with the header."""
    config = make_config(tmp_path, notify="no-such-notifier-rev8a {message}")
    config.write_text("settle_secnds: 2\n" + config.read_text())
    line = next(i for i, l in enumerate(config.read_text().splitlines(), 1) if l.startswith("notify:"))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    told = [l.strip() for l in done.stderr.splitlines() if l.strip().startswith("config.yaml:")]
    assert done.returncode == 2 and "invalid configuration" in done.stderr and "Fix the lines above" in done.stderr
    assert [t.split(": ")[0:2] for t in told] == [["config.yaml:1", "settle_secnds"], [f"config.yaml:{line}", "notify"]]
    assert "no-such-notifier-rev8a" in told[1] and done.stdout == "", done.stdout


def test_a_notify_command_on_path_or_by_full_path_passes(tmp_path):
    load(make_config(tmp_path / "a", notify="logger -t style-pipeline {message}"))
    load(make_config(tmp_path / "b", notify=f"{sys.executable} -c pass"))


def test_a_daemon_whose_notify_command_is_not_on_its_path_starts_warns_and_styles_the_night(tmp_path):
    """The PATH a command is looked up on is the reading process's: `validate` in a shell sees a wider one than
    systemd gives the service. So a command the daemon cannot find is a warning at its start, not a refusal: a
    misread PATH must not cost the night's photos (only `validate` exits 2 for it)."""
    config = make_config(tmp_path, notify="loger -t style-pipeline {message}")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "notices will not go out" in done.stdout + done.stderr
    assert (tmp_path / "outbox" / "starry" / "rocket.png").exists()
