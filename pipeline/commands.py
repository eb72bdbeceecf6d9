"""The daemon's subcommands: run, once, status, validate (and report, install-service)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (("run", cmd_run, "the long-running daemon"),
                             ("once", cmd_once, "process everything waiting now, then exit"),
                             ("validate", cmd_validate, "check the config and every style it names"),
                             ("status", cmd_status, "queue, current job, done and failed counts")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", default="config.yaml", help="the manifest (default: config.yaml)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw status as JSON")
        p.set_defaults(func=func)
    register_ops(sub)


def _daemon(args, once: bool) -> int:
    from .daemon import log
    from .daemon.daemon import Daemon
    from .errors import StartupError

    try:
        daemon = Daemon(args.config, once=once)
        log.configure(daemon.config.log_format, daemon.config.log_level)
        code = daemon.run()
        if daemon.blocked:  # `once` cannot wait for a person: what to fix, on stderr for cron's mail
            from .daemon.folder_faults import once_stopped
            from .daemon.watcher import scan
            in_inbox = sum(1 for _ in scan(daemon.config.inbox, daemon.exclude))
            print(f"style-pipeline once: {once_stopped(daemon.blocked, in_inbox, daemon.spool.counts()['in_work'])}",
                  file=sys.stderr)
        return code
    except StartupError as exc:
        print(f"style-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    return _daemon(args, once=False)


def cmd_once(args) -> int:
    return _daemon(args, once=True)


def _load_config(args, on_path: bool = False):
    """The validated config, or None after printing every problem (the caller exits 2), led by the command's name
    as `once` and `run` say theirs (_daemon): `status` and `validate` printed the same refusal without (rev12b)."""
    from .daemon.config import ConfigError, load

    try:
        return load(args.config, on_path=on_path)
    except ConfigError as exc:
        print(f"style-pipeline {args.command}: {exc}", file=sys.stderr)
        return None


def cmd_validate(args) -> int:
    config = _load_config(args, on_path=True)  # a notify command not found: an error here, a warning in the daemon
    if config is None:
        return 2
    lines = []
    if config.executor == "ray":  # before the OK line: "OK" then "problem: ..." contradicted itself (rev8a)
        from .daemon.ray_cluster import check_cluster
        lines = check_cluster(config)
        if any(line.startswith("problem:") for line in lines):
            print("\n".join(f"{config.path}: executor: ray: {line}" for line in lines), file=sys.stderr)
            return 2
    print(f"{config.path}: OK, {len(config.recipes)} recipe(s): "
          + ", ".join(f"{r.name} ({', '.join(s.path.name for s in r.styles)})" for r in config.recipes.values())
          + f"; default: {config.default_recipe}")
    if lines:
        print("\n".join(lines))
    _warn_device(config)
    return 0


def _warn_device(config) -> None:
    """A CUDA device this machine cannot give: `run` here would stop at start (exit 2), so say it now. A warning,
    not a refusal: a config is often checked on another machine than the GPU box it is for. Ray's devices are the
    cluster's, not this machine's."""
    from .engine.device_here import cuda_missing

    why = None if config.executor == "ray" else cuda_missing(config.devices or (config.device,))
    if why:
        key, value = ("devices", list(config.devices)) if config.devices else ("device", config.device)
        print(f"{config.path}: warning: {key}: {value}: {why}; `run` on this machine stops at start (exit 2): use auto (the "
              f"GPU where there is one, else the CPU) or cpu here", file=sys.stderr)


def cmd_status(args) -> int:
    from .daemon import status

    config = _load_config(args) or _folders_only(args.config)
    if config is None:
        return 2
    from .daemon import status_spare

    config = _running_folders(config)
    data = status.read(config, status_spare.last_word(config.path, config.spool))  # a read-only spool: rev9b 4
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return 0


def _running_folders(config):
    """``config`` with the running daemon's folders where they differ from the file's: a folder edit applies at the
    next start, and `status` looked at the new spool and said "not running" (rev7f; daemon/running.py)."""
    import dataclasses

    from .daemon import running

    found = running.folders(config.path)
    if not found or all(getattr(config, key) == folder for key, folder in found.items()):
        return config
    print(f"(the running daemon's folders: the folder edit in {config.path.name} applies at its next start)\n",
          file=sys.stderr)
    return dataclasses.replace(config, **found)


def _folders_only(path: str):
    """The config's folders alone, for `status` while config.yaml holds an edit the daemon refused: the daemon
    goes on with its last good config, and its queue and current job were hidden until the file was fixed (rev7a).
    The problems were printed first; None (exit 2) when even the folders cannot be read."""
    from .daemon.config import read_folders
    from .daemon.config_schema import Config
    from .errors import ConfigError

    try:
        folders = read_folders(path)
    except ConfigError:
        return None
    print("(status from the folders alone: fix the config above; a running daemon keeps its last good one)\n",
          file=sys.stderr)
    return Config(path=Path(path).resolve(), recipes={}, default_recipe="", styles_dir=Path(path).resolve().parent,
                  **folders)


def register_ops(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the morning report (one self-contained HTML page)")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--since", default="12h", help="only outputs and failures this recent, e.g. 12h, 90m (default 12h)")
    p.add_argument("--since-last", action="store_true",
                   help="the report timer's: start where the last --since-last report ended (OUTBOX/reports/"
                        ".covered_until), so consecutive reports neither miss nor repeat an output; --since the first "
                        "time")
    p.add_argument("-o", "--output", help="the HTML file (default: OUTBOX/reports/<date>-<HHMM>.html, the timer's "
                                          "first of the day <date>.html, copied to OUTBOX/report.html as the latest)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("install-service", help="render the systemd units for this install and print how to enable them")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--user", default="style-pipeline", help="the system user the service runs as")
    p.add_argument("--out", help="where to write the rendered units (default: build/systemd beside the config)")
    p.add_argument("--report-at", default="07:15", help="when the report timer fires (HH:MM)")
    p.set_defaults(func=cmd_install_service)
    p = sub.add_parser("init", help="make a new install: starter config, folders and the shipped styles",
                       description="Write DIR/config.yaml, make inbox/, outbox/, spool/ and copy the shipped styles "
                                   "into DIR/styles/, so the daemon and its service need nothing from the source tree.")
    p.add_argument("dir", help="the folder to set up (created if missing)")
    p.set_defaults(func=cmd_init)
    from .precision_command import register as register_precision  # issue 13: measure what precision auto means
    register_precision(sub)


def cmd_report(args) -> int:
    """Reads only the folders from the config: no torch import, so the hardened report unit stays light."""
    from datetime import datetime, timezone

    from .daemon import running
    from .daemon.config import read_folders, read_max_pixels
    from .daemon.config_schema import REPORTS
    from .report import parse_since, write_reports
    from .report_state import service_state
    from .report_window import dated_page, scheduled_window

    folders = running.folders(args.config) or read_folders(args.config)  # a folder edit waits for the next start
    since, now, reports = parse_since(args.since) if args.since else None, datetime.now(timezone.utc), \
        folders["outbox"] / REPORTS
    since, until, covered = scheduled_window(reports, since, now) if args.since_last else (since, None, None)
    dated = dated_page(reports, now, args.since_last)  # the timer's first page of the day owns <date>.html
    paths = [_outside_inbox(Path(args.output), folders)] if args.output else [dated, folders["outbox"] / "report.html"]
    try:
        for path in {*(p.parent for p in paths), *([reports] if covered else [])}:
            path.mkdir(parents=True, exist_ok=True)
        # The night read once, each page its own links (relative to where it lies).
        write_reports(paths, folders["outbox"], folders["spool"] / "failed", since=since, now=now,
                      done=folders["spool"] / "done", state=service_state(folders, args.config), until=until,
                      max_pixels=read_max_pixels(args.config))
    except OSError as exc:
        raise page_not_written(exc, paths[0].parent) from exc
    print("wrote " + " and ".join(map(str, paths)))
    return _mark_covered(reports, covered) if covered else 0


def _outside_inbox(page: Path, folders: dict[str, Path]) -> Path:
    """`-o` below the inbox is refused (an outbox inside it is the outbox): README says a page is never written among
    the photos, yet `report -o inbox/r.html` wrote one there (rev10b)."""
    from .daemon.config_schema import REPORTS
    from .errors import UsageError

    where = page.absolute().parent.resolve() / page.name
    inbox, outbox = folders["inbox"].resolve(), folders["outbox"].resolve()
    if inbox in where.parents and outbox not in where.parents:
        raise UsageError(f"-o {page} lies in the inbox {inbox}, among the photos", fix="Write it elsewhere, e.g. in "
                         f"{outbox}, or leave -o out for {outbox / REPORTS}/ (nothing was written)")
    return page


def _mark_covered(reports: Path, covered) -> int:
    """The scheduled window's end, for the next --since-last run. Not moved (a full disk): the pages are written,
    and the next run repeats this window rather than miss one, so a warning line and success."""
    from .report_window import MARKER, mark_covered

    try:
        mark_covered(reports, covered)
    except OSError as exc:
        print(f"style-pipeline report: warning: {reports / MARKER} not updated ({exc.strerror or exc}); the next "
              f"report repeats this one's window", file=sys.stderr)
    return 0


def page_not_written(exc: OSError, folder: Path):
    """One line for the report unit's journal instead of a traceback (rev7d: a full disk), naming the folder
    and what to do; main() prints it and exits 2. The old page stays as it was (pages are written atomically)."""
    from .errors import ReportNotWritten
    from .fsio import free_bytes, is_disk_full, is_no_permission, service_user

    folder = Path(exc.filename).parent if isinstance(exc.filename, str) else folder
    if is_disk_full(exc):
        fix = (f"{free_bytes(folder) // 2**20} MB free there: free some space (old outputs, spool/done/) "
               f"and run the report again")
    elif is_no_permission(exc):
        fix = f"the report runs as {service_user()}, which needs write access to that folder"
    else:
        fix = "check that folder and run the report again"
    return ReportNotWritten(f"the page could not be written ({exc.strerror or exc})", path=folder, fix=fix)


def cmd_install_service(args) -> int:
    from .daemon.config import read_folders, read_setting, read_styles_dir, refuse_home_paths
    from .daemon.running import record_path
    from .service import install_commands, owned_folders, render_units, writable_folders

    config = Path(args.config).resolve()
    folders = read_folders(config)
    refuse_home_paths(config, args.user)
    network = bool(read_setting(config, "notify"))
    writable = [folders["inbox"], folders["outbox"], folders["spool"], record_path(config).parent]
    venv_bin = Path(sys.executable).parent
    # Beside the config, not the current folder: run from ~, it left a build/systemd/ there (rev12b).
    out = Path(args.out).absolute() if args.out else config.parent / "build" / "systemd"
    try:
        units = render_units(venv_bin, config, args.user, writable_folders(folders["inbox"], folders["outbox"],
                             folders["spool"]), out, report_at=args.report_at, network=network,
                             optional=[record_path(config).parent], read_only=[read_styles_dir(config)])
    except OSError as exc:  # a config's folder this user cannot write (root's /etc/...): one line, not a traceback
        from .errors import UsageError
        raise UsageError(f"cannot write the units in {out} ({exc.strerror or exc})",
                         fix="Give --out a folder you can write to") from exc
    print("rendered: " + ", ".join(str(u) for u in units))
    if network:
        print("notify: is set, so the daemon's unit may use the network (PrivateNetwork=no); remove it for none")
    print("then, as root:")
    recipes = read_setting(config, "recipes")
    made = [folders["spool"] / name for name in ("work", "done", "failed")]
    made += [folders["inbox"] / str(name) for name in (recipes if isinstance(recipes, dict) else {})
             if str(name) not in ("", ".", "..") and "/" not in str(name)]  # unchecked here: validate names the rest
    for command in install_commands(args.user, owned_folders(writable, made), units):
        print(f"  {command}")
    return 0


def cmd_init(args) -> int:
    from .starter import in_tmp, init_dir, program

    config = init_dir(Path(args.dir))
    tmp = in_tmp(config)
    print(f"wrote {config}, its folders and styles. Next:")
    lines = [f"{program()} validate --config {config}", f"{program()} run --config {config}"]
    if not tmp:  # the user is the one README's install makes; the units are rendered beside the config
        lines.append(f"{program()} install-service --config {config} --user style-pipeline   # to run it as a "
                     f"systemd service (as the user style-pipeline)")
    for line in lines:
        print(f"  {line}")
    if tmp:
        print(f"style-pipeline init: warning: {tmp}", file=sys.stderr)
    return 0
