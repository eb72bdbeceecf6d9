"""Issue 11 item 12: `style-pipeline init DIR` makes an install that needs nothing from the source tree."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT, STYLES
from pipeline import cli
from pipeline.daemon.config import load


def test_init_makes_a_valid_install_with_its_own_styles(tmp_path, capsys):
    site = tmp_path / "new" / "site"
    assert cli.main(["init", str(site)]) == 0
    config = load(site / "config.yaml")
    assert config.styles_dir == site / "styles"
    assert sorted(p.name for p in (site / "styles").iterdir()) == sorted(p.name for p in STYLES.iterdir())
    for recipe in config.recipes.values():
        assert all(style.path.parent == site / "styles" for style in recipe.styles)
    for folder in (site / "inbox", site / "outbox", site / "spool" / "work", site / "spool" / "done",
                   site / "spool" / "failed", *(site / "inbox" / name for name in config.recipes),
                   site / ".style-pipeline"):  # the running-folders record's: the service could not make it (rev8e)
        assert folder.is_dir(), folder
    out = capsys.readouterr().out
    assert f"style-pipeline validate --config {site / 'config.yaml'}" in out


def test_init_never_overwrites_a_config(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("# mine\n")
    assert cli.main(["init", str(tmp_path)]) == 2
    assert (tmp_path / "config.yaml").read_text() == "# mine\n"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already there" in err and str(tmp_path / "config.yaml") in err


def test_init_then_once_runs_without_the_source_tree(tmp_path):
    """From a folder outside the checkout, with the shipped recipes shrunk to test size: a real pass."""
    site = tmp_path / "site"
    assert cli.main(["init", str(site)]) == 0
    text = (site / "config.yaml").read_text()
    text = text.replace("  size: 384", "  size: 32").replace("  steps: 100", "  steps: 2").replace(
        "settle_seconds: 2 ", "settle_seconds: 0 ").replace("contact_sheet: true", "contact_sheet: false")
    (site / "config.yaml").write_text(text)
    (site / "inbox" / "rocket.jpg").write_bytes((ROOT / "pipeline" / "assets" / "samples" / "rocket.jpg").read_bytes())
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(site / "config.yaml")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in (site / "outbox" / "starry").glob("rocket.*")] != []
    assert (site / "spool" / "done" / "rocket.jpg").is_file()


def test_the_starter_config_is_the_shipped_one_with_its_own_styles_dir():
    """One config to keep up to date: the starter differs from the repository's only where it must."""
    shipped = (ROOT / "config.yaml").read_text().splitlines()
    starter = (ROOT / "pipeline" / "templates" / "config.yaml").read_text().splitlines()
    body = [line for line in starter if not line.startswith(("#", "styles_dir:"))]
    assert body == [line for line in shipped if not line.startswith(("#", "styles_dir:"))]
    assert any(line.startswith("styles_dir: styles ") for line in starter)


CUT_SHORT = """import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))  # less than either shipped painting
from pipeline.cli import main
sys.exit(main(["init", sys.argv[1]]))
"""


def test_an_init_cut_short_leaves_no_truncated_painting_for_the_next_init_to_keep(tmp_path):
    """rev9d item 8: init copied the paintings with shutil.copy2 straight to their final names, the one write that
    bypassed fsio.write_atomic. An init cut short (here a file-size limit, as a full disk would) left a truncated
    painting, and the next init skipped it as "already there". Now a painting is whole or absent."""
    import os

    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-c", CUT_SHORT, str(site)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=60)
    assert done.returncode == 2 and "cannot write there" in done.stderr, done.stderr[-600:]
    left = {p.name: p.read_bytes() for p in (site / "styles").iterdir()}
    assert all(data == (STYLES / name).read_bytes() for name, data in left.items()), \
        {name: len(data) for name, data in left.items()}
    assert cli.main(["init", str(site)]) == 0
    assert all((site / "styles" / p.name).read_bytes() == p.read_bytes() for p in STYLES.iterdir())


def test_the_shipped_configs_say_a_full_disk_is_waited_for_not_retried():
    """rev10b #5: both configs' max_attempts comment said 'disk full' was retried with backoff; README's failure
    table says a full disk charges no attempt, the job waits and claiming pauses (diskguard)."""
    for config in (ROOT / "config.yaml", ROOT / "pipeline" / "templates" / "config.yaml"):
        line = next(line for line in config.read_text().splitlines() if line.startswith("max_attempts:"))
        assert "a full disk is waited for, not charged" in line.split("#", 1)[1], (config, line)


def test_inits_next_commands_run_as_printed(tmp_path, capsys, monkeypatch):
    """rev12b: "Next:" said a bare `style-pipeline validate ...`, not on PATH after `make setup` (it is in
    .venv/bin), and its install-service line left out --user. Each line now runs as printed from the folder init
    ran in, PATH without the venv (`run` is left out: it would not return)."""
    import os
    import shlex
    import shutil
    import tempfile

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(ROOT)
    (ROOT / "build").mkdir(exist_ok=True)  # outside /tmp where the checkout is: install-service refuses /tmp
    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=ROOT / "build")) / "site"
    try:
        assert cli.main(["init", str(site)]) == 0
        lines = capsys.readouterr().out.split("Next:\n", 1)[1].splitlines()
        assert len(lines) == 3 or str(site.resolve()).startswith(("/tmp/", "/var/tmp/")), lines
        assert all("--user style-pipeline" in line for line in lines if " install-service " in line), lines
        for line in (line for line in lines if " run " not in line):
            command = shlex.split(line.split("   #")[0])
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
            assert done.returncode == 0, (command, done.stderr[-800:])
    finally:
        shutil.rmtree(site.parent)


def test_init_under_tmp_warns_that_install_service_will_refuse_it(tmp_path, capsys):
    """rev12b: `init /tmp/x` succeeded without a word, and only install-service refused the install later
    (PrivateTmp=yes hides /tmp from the service). Now init says so, and prints no install-service line for it."""
    site = Path("/tmp") / tmp_path.name / "site" if not str(tmp_path).startswith("/tmp/") else tmp_path / "site"
    try:
        assert cli.main(["init", str(site)]) == 0
        captured = capsys.readouterr()
        assert "warning:" in captured.err and "PrivateTmp=yes" in captured.err, captured.err
        assert "`install-service` refuses it" in captured.err and "install-service" not in captured.out
    finally:
        if not str(tmp_path).startswith("/tmp/"):
            import shutil
            shutil.rmtree(site.parent, ignore_errors=True)
