"""The rendered units: filled in, accepted by `systemd-analyze verify`, and rated <= 1.0 by its security check."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.service import UNITS, install_commands, render_units

FOLDERS = [Path("/srv/style-pipeline/inbox"), Path("/srv/style-pipeline/outbox"), Path("/srv/style-pipeline/failed")]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")


@pytest.fixture
def venv_bin(tmp_path: Path) -> Path:
    """verify insists that ExecStart's binary exists and is executable."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "style-pipeline"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return bin_dir


def _render(tmp_path: Path, venv_bin: Path, folders=FOLDERS, **kw) -> dict[str, Path]:
    units = render_units(Path("/opt/style-pipeline"), venv_bin, Path("/etc/style-pipeline/config.yaml"),
                         "style-pipeline", folders, tmp_path / "units", **kw)
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
    report = _settings(units["style-pipeline-report.service"])
    assert report["ExecStart"][0].endswith("report --config /etc/style-pipeline/config.yaml --since 24h "
                                           "-o /srv/style-pipeline/inbox/report.html")
    assert _settings(units["style-pipeline-report.timer"])["OnCalendar"] == ["*-*-* 07:15"]


def test_folders_under_home_are_bound_into_a_tmpfs_home(tmp_path, venv_bin):
    folders = [Path("/home/ann/photos/inbox"), Path("/home/ann/photos/outbox"), Path("/srv/sp/failed")]
    main = _settings(_render(tmp_path, venv_bin, folders, report_path=Path("/srv/sp/failed/r.html"))[UNITS[0]])
    assert main["ProtectHome"] == ["tmpfs"] and main["ReadWritePaths"] == ["/srv/sp/failed"]
    assert main["BindPaths"] == ["/home/ann/photos/inbox /home/ann/photos/outbox"]


@pytest.mark.parametrize("kw, message", [
    ({"folders": [Path("/srv/my photos")]}, "spaces"),
    ({"folders": [Path("relative/inbox")]}, "absolute"),
    ({"folders": [Path("/tmp/inbox")]}, "PrivateTmp"),
    ({"folders": []}, "at least one folder"),
    ({"user": "Style Pipeline"}, "valid system user"),
    ({"report_path": Path("/var/www/report.html")}, "outside every folder"),
])
def test_render_refuses_what_systemd_would_misread(tmp_path, venv_bin, kw, message):
    args = {"install_dir": Path("/opt/sp"), "venv_bin": venv_bin, "config_path": Path("/etc/sp.yaml"),
            "user": "style-pipeline", "folders": FOLDERS, "out_dir": tmp_path, **kw}
    with pytest.raises(ValueError, match=message):
        render_units(**args)


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


def test_network_only_when_notify_is_set(tmp_path, venv_bin, capsys):
    """Issue 11, item 16: PrivateNetwork=yes stays unless the config sets `notify:`."""
    import yaml

    from pipeline.cli import main

    closed = _settings(_render(tmp_path / "closed", venv_bin)[UNITS[0]])
    assert closed["PrivateNetwork"] == ["yes"] and closed["IPAddressDeny"] == ["any"]
    assert closed["RestrictAddressFamilies"] == ["AF_UNIX"]
    opened = {}
    for name, notify in (("quiet", None), ("told", "https://ntfy.sh/night")):
        config = tmp_path / name / "config.yaml"
        config.parent.mkdir()
        config.write_text(yaml.safe_dump({"folders": {"inbox": "/srv/sp/inbox", "outbox": "/srv/sp/outbox",
                                                      "spool": "/srv/sp/spool"}, **({"notify": notify} if notify else {})}))
        assert main(["install-service", "--config", str(config), "--out", str(tmp_path / name / "units")]) == 0
        opened[name] = _settings(tmp_path / name / "units" / UNITS[0])
    assert opened["quiet"]["PrivateNetwork"] == ["yes"]
    assert opened["told"]["PrivateNetwork"] == ["no"] and "IPAddressDeny" not in opened["told"]
    assert opened["told"]["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "PrivateNetwork=no" in capsys.readouterr().out
    if ANALYZE:
        result = _analyze("verify", str(tmp_path / "told" / "units" / UNITS[0]))
        warnings = [line for line in (result.stdout + result.stderr).splitlines() if "/units/" in line]
        assert result.returncode == 0 and not warnings, result.stdout + result.stderr
