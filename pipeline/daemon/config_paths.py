"""The paths config.yaml names (folders, styles_dir, weights, metrics_file) as the user wrote them, and the advice
for a config that is not there: the config's folder, `~`, and the folders above the one a command was run in.

Apart from config_build.py (the checks of everything else), which imports this: config_build -> config_paths ->
yaml_read -> config_schema.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config_schema import DEFAULT_STYLES_DIR, FOLDER_KEYS
from .yaml_read import CONFIG_MAX_BYTES, Problems, read_yaml

# $NAME or ${NAME}: a shell's variable, which config.yaml does not expand (a `$` elsewhere is a plain character).
VARIABLE = re.compile(r"\$(?:[A-Za-z_]\w*|\{[^}]*\})")


def written_path(value: Any, base: Path, where: tuple, problems: Problems | None) -> Path:
    """``value`` as its writer meant it: `~` and `~user` are that home (Python's expanduser, as git reads a path
    setting), so `inbox: ~/inbox` is the home's inbox, where it made a folder named `~` beside the config and
    watched that, while the photos dropped in ~/inbox waited unsaid (rev12b); else relative to ``base``, the
    config's folder. A variable ($HOME, ${PHOTOS}) is refused, naming the key and its line, not expanded: the shell
    that runs `validate` has other variables than the service systemd starts (whose environment is its unit's),
    so the two would read the one line as two folders. No ``problems`` (a reader after validate): unchecked."""
    text = str(value)
    if problems is not None and (found := VARIABLE.search(text)):
        problems.add(where, f"{text}: {found.group()} is not expanded (config.yaml reads no environment variables: "
                     "the service's are not your shell's); write the path itself, or ~ for the home folder")
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded.startswith("~") and problems is not None:
            user = text[1:].split("/", 1)[0]
            problems.add(where, f"{text}: there is no user {user!r} here, so {text.split('/', 1)[0]} names no home "
                         "folder; write the path itself")
        text = expanded
    return base / text


def inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def styles_folder(data: dict, base: Path, problems: Problems | None = None) -> Path:
    """styles_dir, resolved beside the config (unchecked: build says when it is missing)."""
    return written_path(data.get("styles_dir", DEFAULT_STYLES_DIR), base, ("styles_dir",), problems).resolve()


def parse_folders(top: dict, base: Path, problems: Problems) -> dict[str, Path] | None:
    """inbox, outbox and spool resolved beside the config (each defaults to its key); None when `folders:` is no
    mapping. The one reader: build and config.read_folders (status, report, install-service) share it, where a
    second copy gave those an AttributeError traceback for `folders: [inbox]` (rev9d item 3)."""
    data = top.get("folders") or {}
    if not isinstance(data, dict):
        problems.add(("folders",), "must be a mapping with inbox, outbox and spool")
        return None
    problems.unknown(("folders",), data, FOLDER_KEYS)
    folders = {key: _folder(written_path(data.get(key, key), base, ("folders", key), problems), key)
               for key in sorted(FOLDER_KEYS)}
    for key in ("outbox", "spool"):  # the daemon never scans its own folders: one holding the inbox would hide it
        if inside(folders["inbox"], folders[key]):
            problems.add(("folders", key), f"{folders[key]} is the inbox or holds it; the daemon never scans its "
                         "own folders, so no photo would be taken. Give it a folder of its own")
    return folders


def _folder(path: Path, key: str) -> Path:
    """``path`` resolved, except an outbox that is a link to a missing target (a reboot before the share is
    mounted): resolved, each mkdir(parents=True) made the target on the local disk under the mount point, and the
    night's outputs were hidden once the share was mounted over them (rev9f #2). Kept as the link, a mkdir through
    it fails as a link in the way: the pause's "mount it or make that folder", and the writes reach the share once
    it is mounted."""
    if key == "outbox" and path.is_symlink() and not path.exists():
        return path.parent.resolve() / path.name
    return path.resolve()


def check_styles_dir(styles_dir: Path, folders: dict[str, Path] | None, problems: Problems) -> None:
    """styles_dir must exist, and must not be the inbox: its paintings would be taken as photos, and the daemon,
    which never scans a styles_dir below the inbox (watcher.own_folders), cannot leave out the inbox itself."""
    if not styles_dir.is_dir():
        problems.add(("styles_dir",), f"folder {styles_dir} does not exist; create it or point styles_dir at your styles")
    elif folders and styles_dir == folders["inbox"]:
        problems.add(("styles_dir",), f"{styles_dir} is the inbox: its paintings would be taken as photos. Keep "
                     "them in a folder of their own (below the inbox is fine: inbox/paintings/ is never scanned)")


def missing_config_fix(path: Path) -> str:
    """What to do when there is no config at all: a new user's first error, so it names the command that helps.
    A config.yaml in a folder above is the one meant (`cd inbox && style-pipeline status`), and `init` is never
    advised inside a folder such a config uses: it said `style-pipeline init <...>/inbox`, which would have put a
    config, a spool and the paintings inside the running daemon's inbox (rev12b)."""
    here = path.parent
    above = [folder / "config.yaml" for folder in here.parents if (folder / "config.yaml").is_file()]
    if not above:
        return (f"Write a starter config with `style-pipeline init {here}`, or point --config at yours "
                f"(the default is config.yaml in the current folder)")
    use = f"`--config {_shown(above[0])}`"
    for config in above:
        key = _folder_holding(config, here)
        if key:
            return (f"{here} is {key} of {config}, not an install of its own: run the command in {config.parent}, "
                    f"or give it {use}")
    return (f"The nearest config above is {above[0]}: give the command {use}; or write a starter config here with "
            f"`style-pipeline init {here}`")


def _folder_holding(config: Path, here: Path) -> str | None:
    """Which of ``config``'s folders ``here`` is or lies in ("the inbox", "styles_dir"), or "a folder" when the
    config cannot be read (so it may be one); None when none."""
    try:
        data = read_yaml(config, CONFIG_MAX_BYTES)[1]
        if not isinstance(data, dict):
            return "a folder"
        folders = parse_folders(data, config.parent, Problems(config, {})) or {}
        folders["styles_dir"] = styles_folder(data, config.parent)
    except (ConfigError, OSError, UnicodeDecodeError):
        return "a folder"
    holding = [key for key, folder in folders.items() if inside(here, folder)]
    deepest = max(holding, key=lambda key: len(folders[key].parts), default=None)  # inbox/paintings: styles_dir
    return None if deepest is None else deepest if deepest == "styles_dir" else f"the {deepest}"


def _shown(config: Path) -> str:
    """``config`` relative to the current folder when it lies above it (`../config.yaml`), else whole."""
    try:
        cwd = Path.cwd()
    except OSError:  # the current folder was removed
        return str(config)
    return os.path.relpath(config, cwd) if inside(cwd, config.parent) else str(config)
