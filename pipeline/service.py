"""Render the systemd units in pipeline/templates/systemd/ for one install, and the commands that install them.

The templates ship inside the package, and nothing rendered points back at the source tree (the working directory
is the config's folder), so an install made with `style-pipeline init DIR` runs from a wheel alone.

The templates use @NAME@ placeholders rather than Jinja2 so they stay readable (and almost
verifiable) as unit files. Values are checked here rather than quoted: systemd's quoting differs
between settings (ExecStart= splits on spaces, ReadWritePaths= takes a list, '%' and '$' are
expanded), and a path with a space in it is easier to refuse clearly than to quote right everywhere.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath

from .errors import UsageError
from .fsio import write_atomic
from .schedule import parse_hhmm

TEMPLATES = Path(__file__).resolve().parent / "templates" / "systemd"
UNITS = ("style-pipeline.service", "style-pipeline-report.service", "style-pipeline-report.timer")
HOME_ROOTS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
UNIT_DIR = Path("/etc/systemd/system")
_UNSAFE = re.compile(r"[\s\"'\\$;`]|[\x00-\x1f]")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# The daemon unit's network settings: none at all, unless `notify:` must reach a URL or run a command that may.
NETWORK = {
    False: "# No network at all: the weights ship with the package; only AF_UNIX for journald and $NOTIFY_SOCKET.\n"
           "PrivateNetwork=yes\nIPAddressDeny=any\nRestrictAddressFamilies=AF_UNIX",
    True: "# `notify:` is set in the config: only then may the daemon reach the network, to send its notices.\n"
          "PrivateNetwork=no\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
}


REPORT_SINCE = "24h"  # the report timer's first window; each later one starts where the last ended (--since-last)


def render_units(venv_bin: Path, config_path: Path, user: str, folders: list[Path], out_dir: Path, *,
                 report_at: str = "07:15", network: bool = False,
                 optional: list[Path] = (), read_only: list[Path] = ()) -> list[Path]:
    """Write the three units into out_dir and return their paths.

    folders: the writable paths the daemon gets (writable_folders: inbox and spool under ONE entry, since each entry
    is a mount of its own). The report unit writes into the config's outbox (outbox/reports/<date>.html,
    outbox/report.html and the marker outbox/reports/.covered_until that `--since-last` starts from), never the inbox.
    optional: writable too, but possibly missing on an older install (the running-folders record): listed with
    systemd's '-' prefix (ignored when missing) unless a folder already covers it; without it the unit would not
    start at all there (226/NAMESPACE, rev8e). read_only: paths (the styles) that stay read-only inside a writable
    folder, as do the config and the venv (ReadOnlyPaths=, read_only_inside).
    network: the config sets `notify:`, so PrivateNetwork is relaxed (NETWORK); otherwise the unit has none.
    """
    folders = [_checked(f, "folder") for f in folders]
    if not folders:
        raise ValueError("render_units: give at least one folder the daemon may write to")
    venv_bin, config = _checked(venv_bin, "venv_bin"), _checked(config_path, "config")
    optional = [_checked(f, "folder") for f in optional if not any(_inside(PurePosixPath(f), o) for o in folders)]
    for path, what in [*((f, "folder") for f in [*folders, *optional]), (venv_bin, "virtual environment"), (config, "config"),
                       *((p, "Python install") for p in _interpreter_home(venv_bin))]:
        not_in_tmp(path, what)
    if not _USER.fullmatch(user):
        raise UsageError(f"user {user!r} is not a valid system user name (lower case, digits, _ and -)")
    values = {"VENV_BIN": venv_bin, "CONFIG": config, "WORK_DIR": config.parent, "USER": user,
              "SINCE": REPORT_SINCE, "REPORT_AT": _time_of_day(report_at), "DOCUMENTATION": documentation(),
              "NETWORK": NETWORK[bool(network)],
              "READ_ONLY_PATHS": _join(read_only_inside([*folders, *optional], [
                  config, venv_bin.parent, *_interpreter_home(venv_bin), *(_checked(p, "path") for p in read_only)])),
              **_home_access([*folders, *(f"-{o}" for o in optional)],
                             [venv_bin.parent, config.parent, *_interpreter_home(venv_bin)])}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return [_render(TEMPLATES / name, Path(out_dir) / name, values) for name in UNITS]


def _time_of_day(report_at: str) -> str:
    """``--report-at`` as the timer's OnCalendar time (HH:MM), read by the run window's own parser: a regex of its
    own here let 25:99 into the unit, which systemd then refused to load (rev9d item 7)."""
    try:
        return f"{parse_hhmm(report_at, 'report_at'):%H:%M}"
    except ValueError as exc:
        raise UsageError(f"--report-at {report_at!r}: not a time of day as HH:MM (00:00 to 23:59)") from exc


def writable_folders(inbox: Path, outbox: Path, spool: Path) -> list[PurePosixPath]:
    """The ReadWritePaths= entries: ONE folder holding inbox and spool (and outbox when it shares it), never each.

    systemd makes each ReadWritePaths= (and BindPaths=) entry a bind mount of its own, and rename(2) between two
    mounts fails with EXDEV even on one filesystem; the claim is os.rename(inbox/x, spool/work/<id>/x), so with
    separate entries no photo was ever taken under the service (rev8e). Their common folder short of / is refused:
    ReadWritePaths=/ would undo ProtectSystem=strict. The config and styles inside stay read-only (read_only_inside).
    """
    inbox, outbox, spool = (_checked(f, "folder") for f in (inbox, outbox, spool))
    root = PurePosixPath(os.path.commonpath([inbox, spool]))
    if root == PurePosixPath("/"):
        raise UsageError(f"inbox {inbox} and spool {spool} have no common folder below /: the daemon moves each "
                         f"photo from one to the other, which systemd's sandbox (one mount per writable folder) "
                         f"refuses between two folders; put them under one folder (e.g. /srv/style-pipeline/inbox "
                         f"and /srv/style-pipeline/spool: set folders: in the config) and run install-service again")
    both = PurePosixPath(os.path.commonpath([inbox, outbox, spool]))
    return [both] if both != PurePosixPath("/") else _outermost([root, outbox])


def read_only_inside(writable: list[PurePosixPath], paths: list[PurePosixPath]) -> list[str]:
    """ReadOnlyPaths= for the paths that lie inside a writable folder (the config, its styles, a venv beside them),
    so widening ReadWritePaths= to the install folder does not let the service rewrite its own config. systemd
    applies its mounts sorted by path, the deeper one last, so the more specific setting wins (systemd.exec(5):
    "Nest ReadWritePaths= inside of ReadOnlyPaths= in order to provide writable subdirectories within read-only
    directories"; the reverse nesting works the same way). '-': a path missing at start is skipped, not fatal.
    The config is a file mount: an editor that saves by rename replaces it outside, and the kernel then drops that
    mount in the service (checked with unshare): SIGHUP reads the new config, and until the next start only the file
    modes guard it (the install folder is not the service user's)."""
    return [f"-{p}" for p in dict.fromkeys(paths) if any(_inside(p, w) for w in writable)]


def documentation() -> str:
    """Documentation= from the package, not the current folder: its Project-URL when installed with one, else the
    README beside the package (a checkout or an editable install); empty (no link) otherwise."""
    from importlib import metadata

    try:
        urls = metadata.metadata("style-pipeline").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation" and not _UNSAFE.search(url.strip()):
            return url.strip()
    readme = Path(__file__).resolve().parents[1] / "README.md"
    return f"file://{readme}" if readme.is_file() and not _UNSAFE.search(str(readme)) else ""


def not_in_tmp(path: PurePosixPath, what: str) -> None:
    """Resolved too: a venv reached through a symlink into /tmp is just as hidden from the service."""
    for candidate in (path, PurePosixPath(Path(path).resolve())):
        if any(_inside(candidate, PurePosixPath(t)) for t in ("/tmp", "/var/tmp")):
            raise UsageError(f"{what} {path}: PrivateTmp=yes gives the service its own empty /tmp and /var/tmp, "
                             f"so it would not find it there; put it elsewhere (e.g. /srv/style-pipeline or /opt)")


def owned_folders(folders: list[Path], made: list[Path]) -> list[Path]:
    """Every folder the service user must own: the given ones, the ones its start makes (``made``: spool/work,
    done, failed, inbox/<recipe>) and every folder already below the given ones. `install -d -o U` on an existing
    folder changes only that folder, so the recipe and spool folders `init` (or a first `once` by hand) made stay
    the installer's, 0755, and the service could not make spool/work/<job_id> nor claim from inbox/<recipe>: its
    start check refused and systemd restarted it all night (rev8a). Links are left alone (install would follow)."""
    found = []
    for top in folders:
        for parent, dirs, _files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(parent, d)))
            found += [Path(parent) / d for d in dirs]
    return list(dict.fromkeys([*folders, *made, *found]))


def install_commands(user: str, folders: list[Path], units: list[Path], unit_dir: Path = UNIT_DIR) -> list[str]:
    """The shell commands (as root) that create the user and folders and start the units. folders: every folder
    the service user must own and its group may write into (owned_folders)."""
    q = shlex.quote
    return [
        f"id -u {q(user)} >/dev/null 2>&1 || useradd --system --user-group --no-create-home "
        f"--shell /usr/sbin/nologin {q(user)}",
        # setgid folders: files dropped in by people in the group stay in the group.
        f"install -d -o {q(user)} -g {q(user)} -m 2770 " + " ".join(q(str(f)) for f in folders),
        f"install -m 0644 {' '.join(q(str(u)) for u in units)} {q(str(unit_dir))}/",
        "systemctl daemon-reload",
        "systemctl enable --now style-pipeline.service style-pipeline-report.timer",
        "systemd-analyze security style-pipeline.service",
        "journalctl -u style-pipeline -f",
    ]


def _checked(path: Path | str, what: str) -> PurePosixPath:
    path = PurePosixPath(path)
    if not path.is_absolute() or ".." in path.parts or _UNSAFE.search(str(path)):
        raise UsageError(f"{what} {str(path)!r}: needs an absolute path without '..', spaces, quotes, "
                         f"backslashes, '$' or ';' (systemd would split or expand it)")
    return path


def _inside(path: PurePosixPath | str, root: PurePosixPath | str) -> bool:
    path, root = PurePosixPath(str(path).lstrip("-")), PurePosixPath(str(root).lstrip("-"))
    return path == root or root in path.parents


def _home_access(rw: list[PurePosixPath], ro: list[PurePosixPath]) -> dict[str, str]:
    """ProtectHome=yes, unless a path is under a home: then tmpfs, with those paths bound back in. A BindPaths= entry
    is a mount of its own just as a ReadWritePaths= one, so rw holds writable_folders' single folder for inbox and
    spool; '-' entries (optional) keep their prefix, which BindPaths= reads the same way (skipped when missing)."""
    def in_home(p: PurePosixPath) -> bool:
        return any(_inside(p, h) for h in HOME_ROOTS)

    bind_rw = _outermost([p for p in rw if in_home(p)])
    bind_ro = [p for p in _outermost([p for p in ro if in_home(p)]) if not any(_inside(p, b) for b in bind_rw)]
    return {"FOLDERS": _join(p for p in rw if not in_home(p)), "PROTECT_HOME": "tmpfs" if bind_rw or bind_ro else "yes",
            "BIND_PATHS": _join(bind_rw), "BIND_READ_ONLY_PATHS": _join(bind_ro)}


def _interpreter_home(venv_bin: PurePosixPath) -> list[PurePosixPath]:
    """The Python install a venv's python links to (pyenv and uv keep it under ~), if found here."""
    python = Path(venv_bin) / "python"
    return [PurePosixPath(python.resolve().parent.parent)] if python.exists() else []


def _outermost(paths: list[PurePosixPath]) -> list[PurePosixPath]:
    """Drop paths inside another one in the list: binding the parent covers them."""
    return [p for p in dict.fromkeys(paths) if not any(o != p and _inside(p, o) for o in paths)]


def _join(paths) -> str:
    return " ".join(str(p) for p in paths)


def _render(template: Path, dest: Path, values: dict[str, object]) -> Path:
    text = template.read_text()
    for key, value in values.items():
        # '%' starts a systemd specifier (%h, %n...); '%%' is a literal one.
        text = text.replace(f"@{key}@", str(value).replace("%", "%%"))
    left = _PLACEHOLDER.findall(text)
    if left:
        raise ValueError(f"{template.name}: no value for {sorted(set(left))}")
    return write_atomic(text.encode(), dest)
