"""The rendered units: filled in, accepted by `systemd-analyze verify`, and rated <= 1.0 by its security check."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.service import UNITS, install_commands, render_units, writable_folders

ROOT = Path(__file__).resolve().parents[1]


def _scratch() -> Path:
    """Fake installs must lie outside /tmp and /var/tmp (install-service refuses those: PrivateTmp would hide them) and
    outside home (that changes ProtectHome=): the repository's ignored build/ folder, or, when the checkout itself
    sits under /tmp (a fresh clone there), a folder under /opt or /srv where this user may write."""
    for base in (ROOT / "build", Path("/opt/style-pipeline-tests"), Path("/srv/style-pipeline-tests")):
        if str(base.resolve()).startswith(("/tmp/", "/var/tmp/")):
            continue
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        return base
    pytest.skip("no writable folder outside /tmp and home for the service tests' fake installs",
                allow_module_level=True)


BUILD = _scratch()
FOLDERS = [Path("/srv/style-pipeline/inbox"), Path("/srv/style-pipeline/outbox"), Path("/srv/style-pipeline/failed")]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


@pytest.fixture
def venv_bin():
    """verify insists that ExecStart's binary exists and is executable; and it may not lie under /tmp, where
    PrivateTmp=yes would hide it, so it goes in the repository's (ignored) build/ folder."""
    bin_dir = Path(tempfile.mkdtemp(prefix="test-venv-", dir=BUILD)) / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "style-pipeline"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    yield bin_dir
    shutil.rmtree(bin_dir.parent)


def _render(tmp_path: Path, venv_bin: Path, folders=FOLDERS, **kw) -> dict[str, Path]:
    units = render_units(venv_bin, Path("/etc/style-pipeline/config.yaml"), "style-pipeline", folders,
                         tmp_path / "units", **kw)
    return {p.name: p for p in units}


def _settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def _analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


def test_render_fills_everything(tmp_path, venv_bin):
    units = _render(tmp_path, venv_bin)
    assert sorted(units) == sorted(UNITS)
    for unit in units.values():
        assert not re.search(r"@[A-Z_]+@", unit.read_text())
    main = _settings(units["style-pipeline.service"])
    assert main["ExecStart"] == [f"{venv_bin}/style-pipeline run --config /etc/style-pipeline/config.yaml"]
    assert main["Type"] == ["notify"] and main["WatchdogSec"] == ["120"] and main["User"] == ["style-pipeline"]
    assert main["ReadWritePaths"] == [" ".join(map(str, FOLDERS))] and main["ProtectHome"] == ["yes"]
    assert main["WorkingDirectory"] == ["/etc/style-pipeline"]  # the config's folder, not the source tree
    report = _settings(units["style-pipeline-report.service"])
    # No -o: the report goes to the config's outbox (outbox/reports/<date>.html), never into the inbox.
    assert report["ExecStart"] == [f"{venv_bin}/style-pipeline report --config /etc/style-pipeline/config.yaml "
                                   "--since 24h --since-last"]
    assert _settings(units["style-pipeline-report.timer"])["OnCalendar"] == ["*-*-* 07:15"]


def test_folders_under_home_are_bound_into_a_tmpfs_home(tmp_path, venv_bin):
    folders = [Path("/home/ann/photos/inbox"), Path("/home/ann/photos/outbox"), Path("/srv/sp/failed")]
    main = _settings(_render(tmp_path, venv_bin, folders)[UNITS[0]])
    assert main["ProtectHome"] == ["tmpfs"] and main["ReadWritePaths"] == ["/srv/sp/failed"]
    assert main["BindPaths"] == ["/home/ann/photos/inbox /home/ann/photos/outbox"]


@pytest.mark.parametrize("kw, message", [
    ({"folders": [Path("/srv/my photos")]}, "spaces"),
    ({"folders": [Path("relative/inbox")]}, "absolute"),
    ({"folders": [Path("/tmp/inbox")]}, "PrivateTmp"),
    ({"folders": []}, "at least one folder"),
    ({"user": "Style Pipeline"}, "valid system user"),
    ({"venv_bin": Path("/tmp/venv/bin")}, "virtual environment /tmp/venv/bin: PrivateTmp"),
    ({"config_path": Path("/var/tmp/sp/config.yaml")}, "config /var/tmp/sp/config.yaml: PrivateTmp"),
    ({"report_at": "25:99"}, "--report-at '25:99': not a time of day as HH:MM"),  # rev9d item 7: its own regex
    ({"report_at": "07:60"}, "not a time of day"),  # passed \d{1,2}:\d{2}, and systemd refused the timer
])
def test_render_refuses_what_systemd_would_misread(tmp_path, venv_bin, kw, message):
    args = {"venv_bin": venv_bin, "config_path": Path("/etc/sp.yaml"),
            "user": "style-pipeline", "folders": FOLDERS, "out_dir": tmp_path, **kw}
    with pytest.raises(ValueError, match=message):
        render_units(**args)


def test_install_service_refuses_a_report_time_that_does_not_exist_and_writes_a_real_one_as_hh_mm(
        tmp_path, venv_bin, capsys, monkeypatch):
    """rev9d item 7: --report-at was checked by a regex of its own beside the run window's parse_hhmm, so 25:99
    went into OnCalendar= and systemd refused the timer (`Failed to parse calendar specification`)."""
    from pipeline.cli import main

    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=BUILD))  # not under /tmp: install-service refuses that
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    try:
        assert main(["init", str(site)]) == 0
        args = ["install-service", "--config", str(site / "config.yaml"), "--out", str(tmp_path / "u")]
        capsys.readouterr()
        assert main([*args, "--report-at", "25:99"]) == 2
        err = capsys.readouterr().err
        assert "--report-at '25:99': not a time of day as HH:MM (00:00 to 23:59)" in err and err.count("\n") == 1
        assert not (tmp_path / "u").exists()
        assert main([*args, "--report-at", "6:05"]) == 0
        assert _settings(tmp_path / "u" / UNITS[2])["OnCalendar"] == ["*-*-* 06:05"]
    finally:
        shutil.rmtree(site)


def test_install_service_prints_absolute_unit_paths_for_the_root_step(tmp_path, venv_bin, capsys, monkeypatch):
    """rev10b #3: the default --out build/systemd was printed as given, so 'install -m 0644 build/systemd/...' was
    relative: run as root from another folder (sudo -i, a root shell in /root) it copied nothing. rev12b: that
    default was the current folder's, so run from ~ it left ~/build/systemd; now it lies beside the config."""
    from pipeline.cli import main

    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=BUILD))  # not under /tmp: install-service refuses that
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["init", str(site)]) == 0
        capsys.readouterr()
        assert main(["install-service", "--config", str(site / "config.yaml")]) == 0
        out = capsys.readouterr().out
        copy = next(line.split()[3:] for line in out.splitlines() if line.strip().startswith("install -m 0644"))
        assert copy and all(Path(p).is_absolute() for p in copy), out
        assert all(Path(p).is_file() for p in copy[:-1]) and copy[0].startswith(str(site / "build" / "systemd"))
        assert str(site / "build" / "systemd") in out.split("rendered: ")[1].splitlines()[0]
        assert list(tmp_path.iterdir()) == []  # nothing in the folder it was run from
    finally:
        shutil.rmtree(site)


def test_install_commands(tmp_path, venv_bin):
    units = list(_render(tmp_path, venv_bin).values())
    commands = install_commands("style-pipeline", FOLDERS, units)
    assert any(c.startswith("install -d -o style-pipeline") and "/srv/style-pipeline/inbox" in c for c in commands)
    assert "systemctl enable --now style-pipeline.service style-pipeline-report.timer" in commands


@needs_analyze
@pytest.mark.parametrize("home", [False, True], ids=["srv", "home"])
def test_systemd_analyze_verify(tmp_path, venv_bin, home):
    folders = [Path("/home/ann/sp/inbox"), Path("/home/ann/sp/outbox")] if home else FOLDERS
    units = _render(tmp_path, venv_bin, folders)
    result = _analyze("verify", *map(str, units.values()))
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "/units/" in line]
    assert result.returncode == 0 and not warnings, result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS[:2])
@pytest.mark.parametrize("home", [False, True], ids=["srv", "home"])
def test_security_exposure_at_most_1(tmp_path, venv_bin, unit, home):
    folders = [Path("/home/ann/sp/inbox"), Path("/home/ann/sp/outbox")] if home else FOLDERS
    path = _render(tmp_path, venv_bin, folders)[unit]
    result = _analyze("security", "--offline=yes", str(path))
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (needs systemd >= 250): {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= 1.0, result.stdout


def test_network_only_when_notify_is_set(tmp_path, venv_bin, capsys, monkeypatch):
    """Issue 11, item 16: PrivateNetwork=yes stays unless the config sets `notify:`."""
    import yaml

    from pipeline.cli import main

    closed = _settings(_render(tmp_path / "closed", venv_bin)[UNITS[0]])
    assert closed["PrivateNetwork"] == ["yes"] and closed["IPAddressDeny"] == ["any"]
    assert closed["RestrictAddressFamilies"] == ["AF_UNIX"]
    opened = {}
    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=BUILD))  # not under /tmp: install-service refuses that
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))  # nor this venv, when the checkout is in /tmp
    for name, notify in (("quiet", None), ("told", "https://ntfy.sh/night")):
        config = site / name / "config.yaml"
        config.parent.mkdir()
        config.write_text(yaml.safe_dump({"folders": {"inbox": "/srv/sp/inbox", "outbox": "/srv/sp/outbox",
                                                      "spool": "/srv/sp/spool"}, **({"notify": notify} if notify else {})}))
        assert main(["install-service", "--config", str(config), "--out", str(tmp_path / name / "units")]) == 0
        opened[name] = _settings(tmp_path / name / "units" / UNITS[0])
        # the running folders' record beside the config (daemon/running.py) is writable to the service
        # '-': an install older than that folder still starts (rev8e finding 2)
        assert f"-{config.parent / '.style-pipeline'}" in opened[name]["ReadWritePaths"][0].split()
    assert opened["quiet"]["PrivateNetwork"] == ["yes"]
    assert opened["told"]["PrivateNetwork"] == ["no"] and "IPAddressDeny" not in opened["told"]
    assert opened["told"]["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "PrivateNetwork=no" in capsys.readouterr().out
    if ANALYZE:
        result = _analyze("verify", str(tmp_path / "told" / "units" / UNITS[0]))
        warnings = [line for line in (result.stdout + result.stderr).splitlines() if "/units/" in line]
        assert result.returncode == 0 and not warnings, result.stdout + result.stderr
    shutil.rmtree(site)


# --- issue 11: the report lands in the outbox; the install needs nothing from the source tree ------------------


def test_report_without_o_goes_to_the_outbox_never_the_inbox(tmp_path, monkeypatch, capsys):
    from datetime import datetime

    from daemon_helpers import make_config
    from pipeline import cli

    config = make_config(tmp_path / "site")
    monkeypatch.chdir(tmp_path)
    before = datetime.now().astimezone()
    assert cli.main(["report", "--config", str(config), "--since", "24h"]) == 0
    days = {f"{day:%Y-%m-%d}" for day in (before, datetime.now().astimezone())}  # two when midnight fell between
    outbox = tmp_path / "site" / "outbox"
    dated, = (outbox / "reports").glob("*.html")
    named = re.fullmatch(r"(\d{4}-\d\d-\d\d)-\d{4}\.html", dated.name)  # by hand: <date>-HHMM
    assert named and named[1] in days, dated.name
    for page in (dated, outbox / "report.html"):
        assert b"<html" in page.read_bytes().lower()
    assert list((tmp_path / "site" / "inbox").iterdir()) == [] and not (tmp_path / "report.html").exists()
    assert str(dated) in capsys.readouterr().out


def test_install_service_takes_nothing_from_the_current_folder(tmp_path, monkeypatch, capsys, venv_bin):
    from pipeline import cli
    from pipeline.service import documentation

    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=BUILD))
    try:
        assert cli.main(["init", str(site)]) == 0
        monkeypatch.chdir(tmp_path)  # a folder with no README: Documentation= must not point here
        monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
        assert cli.main(["install-service", "--config", str(site / "config.yaml"), "--out", str(tmp_path / "u")]) == 0
        main = _settings(tmp_path / "u" / "style-pipeline.service")
        assert main["WorkingDirectory"] == [str(site)]
        assert main["Documentation"] == [documentation()] and str(tmp_path) not in documentation()
        assert documentation().startswith(("https://", "http://", "file://"))
        if documentation().startswith("file://"):
            assert Path(documentation()[len("file://"):]).is_file()
        assert main["ExecStart"] == [f"{venv_bin}/style-pipeline run --config {site / 'config.yaml'}"]
    finally:
        shutil.rmtree(site)


def test_install_service_refuses_an_install_under_tmp(tmp_path, capsys):
    from pipeline import cli

    if not str(tmp_path).startswith(("/tmp/", "/var/tmp/")):
        pytest.skip(f"pytest's temporary folder {tmp_path} is not under /tmp")

    assert cli.main(["init", str(tmp_path / "site")]) == 0
    assert "install-service` refuses it" in capsys.readouterr().err  # init said so first (rev12b)
    code = cli.main(["install-service", "--config", str(tmp_path / "site" / "config.yaml"),
                     "--out", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert code == 2 and "PrivateTmp" in err and err.count("\n") == 1
    assert not (tmp_path / "u").exists()


def test_unit_templates_ship_inside_the_package():
    import fnmatch
    import tomllib

    from pipeline.service import TEMPLATES

    package = ROOT / "pipeline"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pipeline"]
    for name in UNITS:
        relative = (TEMPLATES / name).relative_to(package).as_posix()  # raises when outside the package
        assert any(fnmatch.fnmatchcase(relative, g) for g in globs), f"{relative} is not in package-data"


def test_systemd_waits_out_the_daemons_whole_stop(tmp_path, venv_bin):
    """A stop's waits share one deadline, daemon.STOP_WAIT: the watcher's join, the slots, the landing (WRITE_GRACE
    kept for it), the sheets, then the notices (alerts.FLUSH_WAIT kept for them). The unit gave it 90 s against
    160 s of waits (rev6e), and then 180 s against up to 400 s, each wait with a budget of its own (rev7e): past
    TimeoutStopSec SIGKILL charged the running photo a crash at the next start. tests/test_handover.py's
    stuck-stop test checks that the waits keep to the deadline; this one, that the deadline fits the unit."""
    from pipeline import alerts
    from pipeline.daemon import daemon, handover, watcher

    unit = _render(tmp_path, venv_bin)["style-pipeline.service"]
    stop_sec = int(_settings(unit)["TimeoutStopSec"][0])
    assert stop_sec >= daemon.STOP_WAIT + 15, stop_sec  # + the last status and metrics writes, the exit
    assert daemon.FLUSH_WAIT is alerts.FLUSH_WAIT and alerts.FLUSH_WAIT >= alerts.TIMEOUT  # one notice goes out
    slots = daemon.STOP_WAIT - alerts.FLUSH_WAIT - watcher.OBSERVER_JOIN - handover.WRITE_GRACE
    assert slots >= 60, f"{slots} s for the slots' last step and checkpoint"


def test_the_top_level_systemd_folder_holds_the_units_the_package_ships():
    """The product's layout has systemd/ at the top; the units ship in the package (a non-editable install needs
    them), so systemd/ is a link to pipeline/templates/systemd/: one copy, both places (the seventh session found
    systemd/ gone since the units moved into the package)."""
    from pipeline import service

    top = Path(__file__).resolve().parents[1] / "systemd"
    assert top.is_dir() and top.resolve() == service.TEMPLATES
    assert {p.name for p in top.iterdir()} >= {"style-pipeline.service", "style-pipeline-report.service",
                                                "style-pipeline-report.timer"}


def _writable_by(path: Path, uid: int, gid: int) -> bool:
    """The kernel's permission check for a plain (no ACL) folder: write and search for this uid/gid."""
    st = path.stat()
    if st.st_uid == uid:
        return st.st_mode & 0o300 == 0o300
    if st.st_gid == gid:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003


def test_the_printed_install_line_hands_every_folder_init_made_to_the_service_user(tmp_path, venv_bin, capsys,
                                                                                  monkeypatch):
    """rev8a (HIGH): the README's path, `init DIR` then `install-service --user U` and its printed commands as
    root, left inbox/<recipe>/ and spool/work, done, failed the installer's (0755): `install -d -o U` on an existing
    folder changes only that folder, and it named only inbox, outbox and spool. The service then could not make
    spool/work/<job_id>, its start check refused and systemd restarted it every 10 s all night. The printed line
    now names every folder below the three (here also an outbox/starry/ a first `once` by hand made) and those the
    daemon's start makes; as root it is run (with a numeric uid: no user is added) and the kernel's rules checked."""
    import os
    import shlex

    from pipeline import cli

    site = Path(tempfile.mkdtemp(prefix="test-site-", dir=BUILD))
    try:
        assert cli.main(["init", str(site)]) == 0
        (site / "outbox" / "starry").mkdir()
        (site / "outbox" / "elsewhere").symlink_to(tmp_path)  # a link: install -d would change its target
        monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
        capsys.readouterr()
        assert cli.main(["install-service", "--config", str(site / "config.yaml"), "--user", "style-pipeline",
                         "--out", str(tmp_path / "u")]) == 0
        line = next(l.strip() for l in capsys.readouterr().out.splitlines() if l.strip().startswith("install -d"))
        needed = [site / p for p in ("inbox", "outbox", "spool", "spool/work", "spool/done", "spool/failed",
                                     "inbox/starry", "inbox/scream", "inbox/blend", "outbox/starry",
                                     ".style-pipeline")]
        named = shlex.split(line)[8:]  # after install -d -o U -g U -m 2770
        assert sorted(named) == sorted(map(str, needed)), line
        if os.geteuid() == 0:
            subprocess.run([str(4242) if a == "style-pipeline" else a for a in shlex.split(line)], check=True)
            blocked = [str(p.relative_to(site)) for p in needed if not _writable_by(p, 4242, 4242)]
            assert blocked == [], f"after the printed commands the service user cannot write: {blocked}"
            assert tmp_path.stat().st_uid == os.geteuid()
    finally:
        shutil.rmtree(site)


@pytest.mark.parametrize("site, key", [("/srv/sp", "ReadWritePaths"), ("/home/ann/sp", "BindPaths")])
def test_inbox_and_spool_share_one_writable_entry_and_the_config_stays_read_only(tmp_path, venv_bin, site, key):
    """rev8e: each ReadWritePaths=/BindPaths= entry is a bind mount of its own, and the claim's rename from inbox to
    spool/work fails with EXDEV between two; so one entry for the install folder, the config and styles inside it
    read-only (the deeper path wins), the record folder covered by it (tests/test_service_mounts.py runs it)."""
    root = Path(site)
    folders = writable_folders(root / "inbox", root / "outbox", root / "spool")
    units = render_units(venv_bin, root / "config.yaml", "style-pipeline", folders, tmp_path / "units",
                         optional=[root / ".style-pipeline"], read_only=[root / "styles"])
    for unit in UNITS[:2]:
        lines = _settings(units[UNITS.index(unit)])
        assert lines[key] == [site] and lines["ReadOnlyPaths"] == [f"-{site}/config.yaml -{site}/styles"]
    elsewhere = render_units(venv_bin, Path("/etc/sp/config.yaml"), "style-pipeline", folders, tmp_path / "u2",
                             optional=[Path("/etc/sp/.style-pipeline")], read_only=[Path("/etc/sp/styles")])
    lines = _settings(elsewhere[0])
    assert lines[key][0].split()[0] == site and lines["ReadWritePaths"][0].split()[-1] == "-/etc/sp/.style-pipeline"
    assert lines["ReadOnlyPaths"] == [""]  # nothing of the config's inside a writable folder


def test_an_outbox_elsewhere_gets_its_own_entry_and_inbox_and_spool_apart_are_refused():
    assert writable_folders(Path("/srv/sp/inbox"), Path("/mnt/nas/out"), Path("/srv/sp/spool")) == \
        [Path("/srv/sp"), Path("/mnt/nas/out")]
    with pytest.raises(ValueError, match=r"inbox /srv/in and spool /var/spool/sp have no common folder.*under one "
                                         r"folder"):
        writable_folders(Path("/srv/in"), Path("/srv/out"), Path("/var/spool/sp"))
