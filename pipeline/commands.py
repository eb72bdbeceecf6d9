"""The daemon's subcommands: run, once, status, validate (and report, install-service)."""
from __future__ import annotations

import argparse
import json
import sys


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


def _daemon(args, once: bool) -> int:
    from .daemon import log
    from .daemon.daemon import Daemon, StartupError

    try:
        daemon = Daemon(args.config, once=once)
    except StartupError as exc:
        print(f"style-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2
    log.configure(daemon.config.log_format, daemon.config.log_level)
    return daemon.run()


def cmd_run(args) -> int:
    return _daemon(args, once=False)


def cmd_once(args) -> int:
    return _daemon(args, once=True)


def cmd_validate(args) -> int:
    from .daemon.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{config.path}: OK, {len(config.recipes)} recipe(s): "
          + ", ".join(f"{r.name} ({', '.join(s.path.name for s in r.styles)})" for r in config.recipes.values())
          + f"; default: {config.default_recipe}")
    return 0


def cmd_status(args) -> int:
    from .daemon import status
    from .daemon.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    data = status.read(config)
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return 0
