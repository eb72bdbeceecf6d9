"""The rendered unit, as systemd would set it up (rev8e, the morning after an upgrade).

systemd implements ProtectSystem=strict + ReadWritePaths= with one bind mount per listed path (namespace.c: a path
that is not yet a mount point is bind-mounted onto itself), and refuses to start (226/NAMESPACE) when a listed path
without the '-' prefix does not exist. There is no systemd PID 1 on this box, so these probes rebuild that layout in
a private mount namespace (unshare -m, root only) and run the real daemon in it. Elsewhere (no root, no unshare,
or a container that forbids mounts) that test is skipped with the reason, never failed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from daemon_helpers import ROOT, SAMPLES, make_config, outputs, wait_for
from test_service import BUILD

needs_root_unshare = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                        reason="needs root and unshare (util-linux) to rebuild the unit's mounts "
                                               "in a private mount namespace")


def _can_unshare_mounts() -> None:
    """Root is not always enough (a container without CAP_SYS_ADMIN): skip then, as mounted_tmpfs does."""
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount --bind / / 2>&1"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"unshare -m / mount --bind is not allowed here: {(done.stdout + done.stderr).strip()[:200]}")


@pytest.fixture
def install():
    """A fake install outside /tmp (install-service refuses /tmp: PrivateTmp would hide it): test_service's scratch
    folder, which moves to /opt or /srv when the checkout itself is a fresh clone under /tmp (as CI's may be)."""
    base = BUILD / f"probe-rev8e-{os.getpid()}-{time.monotonic_ns()}"
    base.mkdir(parents=True)
    yield base
    subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)
    shutil.rmtree(base, ignore_errors=True)


RENDER = "import sys\nsys.executable = sys.argv.pop(1)\nfrom pipeline.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _unit_python() -> str:
    """The python ExecStart names: this one, unless the checkout (and its venv) is a fresh clone under /tmp, which
    install-service refuses (PrivateTmp would hide it); these tests read only the unit's mount lines, so a path
    under the scratch folder stands in, as test_service's venv_bin does."""
    if not sys.executable.startswith(("/tmp/", "/var/tmp/")):
        return sys.executable
    return str(BUILD / "venv" / "bin" / "python")


def _rendered(config: Path, out: Path, key: str = "ReadWritePaths") -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", RENDER, _unit_python(), "install-service", "--config", str(config),
                           "--user", "root", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    unit = (out / "style-pipeline.service").read_text()
    found = re.search(rf"^{key}=(.*)$", unit, re.M)
    return found.group(1).split() if found else []


@needs_root_unshare
def test_under_the_rendered_units_mounts_a_dropped_photo_is_styled(install):
    """The unit install-service renders lists inbox, outbox and spool as separate ReadWritePaths: under systemd each
    is its own bind mount, and rename(2) between two mounts fails with EXDEV even on one filesystem. The claim
    (inbox -> spool/work) is a rename, so under the service no photo is ever taken: each is listed as 'cannot take
    from the inbox: Invalid cross-device link' and stays there all night."""
    config = make_config(install, rescan_seconds=1)
    for name in ("spool/work", "spool/done", "spool/failed", "inbox/starry", "inbox/scream"):  # install -d's
        (install / name).mkdir(parents=True, exist_ok=True)
    (install / "outbox").mkdir(exist_ok=True)
    (install / ".style-pipeline").mkdir(exist_ok=True)
    _can_unshare_mounts()
    rw = [p.lstrip("-") for p in _rendered(config, install / "units")]
    ro = [p.lstrip("-") for p in _rendered(config, install / "units", "ReadOnlyPaths") if Path(p.lstrip("-")).exists()]
    mounts = [f"mount --bind {install} {install}", f"mount -o remount,bind,ro {install}"]  # ProtectSystem=strict
    # ReadWritePaths=: each path a bind mount of its own; then ReadOnlyPaths= inside them (systemd: sorted by path)
    mounts += [f"mount --bind {p} {p} && mount -o remount,bind,rw {p}" for p in rw]
    mounts += [f"mount --bind {p} {p} && mount -o remount,bind,ro {p}" for p in ro]
    script = (" && ".join(mounts) + f" && {{ (echo '#' >> {config}) 2>/dev/null && echo CONFIG-WRITABLE; true; }}"
              f" && exec {sys.executable} -m pipeline.cli run --config {config}")
    log = install / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as handle:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=install,
                                env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: b'"event": "watching"' in log.read_bytes(), 90)
        except AssertionError:
            raise AssertionError(f"the daemon did not start: {log.read_text()[-1500:]}") from None
        shutil.copy(SAMPLES / "rocket.jpg", install / "inbox" / "holiday.jpg")
        try:
            wait_for(lambda: outputs(install), 60)
        except AssertionError:
            said = [line for line in log.read_text().splitlines() if "cannot claim" in line]
            raise AssertionError(f"no output under the unit's mounts; the daemon said: {said[:1]}") from None
        assert "CONFIG-WRITABLE" not in log.read_text(), "the config was writable inside the unit's mounts"
        assert rw == [str(install)], rw  # one entry for the install folder: inbox, outbox, spool, .style-pipeline
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_re_rendered_unit_names_only_folders_an_older_install_has(install):
    """An upgrade: the install was made before .style-pipeline/ existed (the old init and the old unit's
    ProtectSystem=strict never made it). The user re-runs install-service and copies the new unit. systemd refuses to
    start a unit whose ReadWritePaths= names a missing path without the '-' prefix (226/NAMESPACE), so the service
    does not start at all, for a record the daemon itself treats as optional (running.record only warns)."""
    config = make_config(install)
    for name in ("outbox", "spool", "spool/work", "spool/done", "spool/failed"):
        (install / name).mkdir(exist_ok=True)
    rendered = _rendered(config, install / "units")
    missing = [p for p in rendered if not p.startswith("-") and not Path(p).exists()]
    assert missing == [], f"systemd would refuse to start: ReadWritePaths= names missing {missing}"
    assert rendered == [str(install)]  # .style-pipeline/ is covered by the install folder's one entry


def test_a_claim_across_two_mounts_is_told_the_cause_and_the_fix():
    """EXDEV from the claim's rename: not 'check the photo' (which fixes nothing) but the two mounts and the fix;
    never a copy instead, which would make the claim non-atomic."""
    import errno

    from pipeline.daemon.unclaimable import fix_for

    photo = Path("/srv/sp/inbox/holiday.jpg")
    fix = fix_for(photo, OSError(errno.EXDEV, "Invalid cross-device link", str(photo)))
    assert "inbox and spool are on different mounts" in fix and "re-run install-service" in fix
    assert "check the photo" not in fix
