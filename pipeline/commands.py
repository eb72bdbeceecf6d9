"""The daemon's subcommands (run, once, status, validate), registered on the CLI's parser."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Filled in by the daemon; the engine's CLI works without it."""
