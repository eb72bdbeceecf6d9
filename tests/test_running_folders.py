"""rev7f finding 3: a folder edit in config.yaml applies at the next start, and `status` and `report` read the file's
folders: they looked at the new spool and outbox while the daemon ran on the old ones, and said "not running".
The daemon records its folders beside the config (daemon/running.py); the readers use them while it lives."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from daemon_helpers import SAMPLES, log_events, make_config, outputs, start, stop, wait_for, wait_ready


def test_status_and_report_follow_the_running_folders_after_a_folder_edit(tmp_path, capsys, engine):
    from pipeline import cli
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    daemon = start(config)
    page = tmp_path / "page.html"

    def status() -> dict:
        capsys.readouterr()
        assert cli.main(["status", "--config", str(config), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    def report() -> str:
        assert cli.main(["report", "--config", str(config), "--since", "24h", "-o", str(page)]) == 0
        return page.read_text()

    try:
        wait_ready(daemon)
        data = yaml.safe_load(config.read_text())
        data["folders"] = {"inbox": "inbox", "outbox": "outbox2", "spool": "spool2"}
        config.write_text(yaml.safe_dump(data))
        wait_for(lambda: any(str(e.get("event")).startswith("folder changes") for e in log_events(daemon)), 30, daemon)
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        wait_for(lambda: outputs(tmp_path), 120, daemon)  # styled into the old outbox
        wait_for(lambda: status()["done"] == 1, 60, daemon)  # counted from the old spool
        running = status()
        assert running["state"] != "not running" and running["pid"] == daemon.pid
        html = report()
        assert 'class="processed">1<' in html and "rocket" in html and "Service: running." in html
        # rev8d finding 3: a `once` run of the same config (the new folders) took the record over and removed it at
        # its stop: status said "not running" of the service again. In-process, so its pid is this one's.
        assert Daemon(config, once=True, engine=engine).run() == 0
        assert status()["pid"] == daemon.pid and status()["state"] != "not running", status()
    finally:
        stop(daemon)
    assert status()["state"] == "not running" and status()["done"] == 0  # stopped: the file's folders again
    assert not (tmp_path / ".style-pipeline" / "config.yaml.running.json").exists()  # its record went with it


def test_a_second_daemon_takes_the_record_over_when_the_first_stops(tmp_path, capsys):
    """left8's list: the service (first) and a `run` by hand (second) of one config; the second left the record to
    the first, and when the service stopped (its forget removed the record) the second, still styling in the old
    folders, had none: after a folder edit, `status` looked at the new spool and said "not running". Now each rescan
    (rescan_seconds 2 here) writes the record again when its owner has gone."""
    from pipeline import cli

    config = make_config(tmp_path)
    record = tmp_path / ".style-pipeline" / "config.yaml.running.json"
    first = start(config)
    second = None
    try:
        wait_ready(first)
        second = start(config)
        wait_ready(second)
        assert json.loads(record.read_text())["pid"] == first.pid
        said = [e["event"] for e in log_events(second) if e["event"].startswith("another daemon")]
        assert len(said) == 1 and said[0].startswith(f"another daemon (pid {first.pid}) is running on this config; "
                                                     "the two share the inbox: each holds its own engine"), said
        assert not [e for e in log_events(first) if e["event"].startswith("another daemon")]  # rev11b: unsaid
        stop(first)
        wait_for(lambda: record.exists() and json.loads(record.read_text())["pid"] == second.pid, 60, second)
        data = yaml.safe_load(config.read_text())
        data["folders"] = {"inbox": "inbox", "outbox": "outbox2", "spool": "spool2"}
        config.write_text(yaml.safe_dump(data))
        capsys.readouterr()
        assert cli.main(["status", "--config", str(config), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["pid"] == second.pid and shown["state"] != "not running", shown
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert not record.exists()


def test_the_record_beside_the_shipped_config_is_ignored_by_git():
    """rev11b: `make run` writes .style-pipeline/config.yaml.running.json beside config.yaml, in the checkout, and
    `git status` listed it as a file to commit."""
    import subprocess
    from pathlib import Path

    from pipeline.daemon.running import record_path

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    record = record_path(root / "config.yaml").relative_to(root)
    assert subprocess.run(["git", "check-ignore", "-q", str(record)], cwd=root).returncode == 0, record
