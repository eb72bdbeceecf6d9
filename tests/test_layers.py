"""The layering holds: every module imports only downward, and no import runs in a circle.

engine <- jobs <- executors <- daemon <- cli, over a base (errors, fsio) that everything may use. The engine knows
nothing of folders (no daemon module, no watchdog); the daemon layer knows nothing of tensors (no torch, numpy, PIL).
Imports inside functions count as much as those at the top: a lazy import is still a dependency. A new module has to
be given its layer here, which is the point: placing it is a decision, written down (docs/architecture.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pipeline"

BASE, ENGINE, JOBS, EXECUTORS, DAEMON, CLI = range(6)
NAMES = ["base", "engine", "jobs", "executors", "daemon", "cli"]
LAYER = {
    "pipeline": BASE, "pipeline.errors": BASE, "pipeline.fsio": BASE,
    "pipeline.engine": ENGINE,  # and every module under it
    "pipeline.progress": JOBS, "pipeline.schedule": JOBS, "pipeline.notify": JOBS, "pipeline.alerts": JOBS,
    "pipeline.notice_outbox": JOBS,  # rev11a: the notices waiting, bounded, and the breaker
    "pipeline.daemon": JOBS,
    **{f"pipeline.daemon.{name}": JOBS for name in (
        "config", "config_build", "config_paths", "config_schema", "yaml_read", "yaml_loader", "spool", "outputs", "joblog", "failures", "metrics",
        "settle", "diskguard", "watcher", "skipped", "pairing", "log", "jobs", "prechecks", "config_pool", "style_names", "sheets", "handover")},
    "pipeline.daemon.spool_count": JOBS, "pipeline.daemon.folder_faults": JOBS,  # rev8b findings 2 and 4
    "pipeline.daemon.spool_job": JOBS,  # the Job record, apart from the spool's moves (rev10a)
    "pipeline.daemon.spool_sidecar": JOBS,  # a sidecar copied in before its photo moves (the claim)
    **{f"pipeline.daemon.{name}": EXECUTORS for name in ("worker", "executor", "ray_cluster", "ray_executor",
                                                         "ray_actor", "pool", "batching", "executors", "turns")},
    "pipeline.daemon.daemon": DAEMON, "pipeline.daemon.status": DAEMON, "pipeline.daemon.state": DAEMON,
    "pipeline.daemon.reload": DAEMON, "pipeline.daemon.reporting": DAEMON, "pipeline.daemon.sidecars": DAEMON,
    "pipeline.daemon.tally": JOBS, "pipeline.daemon.unclaimable": DAEMON,  # rev7d findings 7 and 3
    "pipeline.daemon.startup": DAEMON,  # the checks before the loop, the signal handlers
    "pipeline.daemon.running": DAEMON, "pipeline.daemon.status_spare": DAEMON,  # rev7f finding 3: the running folders, beside status
    "pipeline.cli": CLI, "pipeline.interrupts": CLI, "pipeline.commands": CLI, "pipeline.starter": CLI, "pipeline.service": CLI,
    "pipeline.report": CLI, "pipeline.report_pictures": CLI, "pipeline.report_state": CLI, "pipeline.report_window": CLI, "pipeline.report_logs": CLI, "pipeline.precision_command": CLI,
}
# Third-party packages a layer must not touch, and why.
FORBIDDEN = {ENGINE: {"watchdog", "yaml", "structlog"},  # the engine knows nothing of folders or the daemon's log
             DAEMON: {"torch", "numpy", "torchvision", "PIL", "scipy"}}  # the daemon knows nothing of tensors


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    probe = module
    while probe not in LAYER:
        assert "." in probe, f"{module}: no layer given; add it to LAYER in tests/test_layers.py"
        if probe.startswith("pipeline.engine."):
            return ENGINE
        probe = probe.rsplit(".", 1)[0]
        assert probe != "pipeline.daemon", f"{module}: no layer given; add it to LAYER in tests/test_layers.py"
    return LAYER[probe]


def imports(package: str, source: str, modules: set[str]) -> set[str]:
    """Every module a file in ``package`` names in an import (ours resolved, third-party kept as top names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    return {m if m.split(".")[0] == "pipeline" else m.split(".")[0] for m in found}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(name if path.name == "__init__.py" else name.rsplit(".", 1)[0], path.read_text(), set(paths))
            for name, path in paths.items()}


def test_every_import_runs_downward():
    wrong = []
    for module, targets in graph().items():
        mine = layer_of(module)
        for target in targets:
            if target.startswith("pipeline"):
                if layer_of(target) > mine:
                    wrong.append(f"{module} ({NAMES[mine]}) imports {target} ({NAMES[layer_of(target)]})")
            elif target in FORBIDDEN.get(mine, ()):
                wrong.append(f"{module} ({NAMES[mine]}) imports {target}")
    assert not wrong, "imports that run upward or across a line:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = {m: {t for t in ts if t.startswith("pipeline") and t != m and not m.startswith(t + ".")}
             for m, ts in graph().items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_walker_sees_an_upward_import_and_a_lazy_one():
    """The checks above can fail: relative imports resolve, and one inside a function counts."""
    source = "import torch\ndef f():\n    from ..daemon.daemon import Daemon\n    from . import images\n"
    found = imports("pipeline.engine", source, {"pipeline.engine.images"})
    assert found == {"torch", "pipeline.daemon.daemon", "pipeline.engine", "pipeline.engine.images"}
    assert layer_of("pipeline.daemon.daemon") > layer_of("pipeline.engine.transfer")


def test_the_daemon_layer_imports_without_torch():
    """The daemon knows nothing of tensors, at run time too. FORBIDDEN above sees only imports that name torch, and
    daemon.py's `from ..engine import StyleTransfer` (for an annotation) loaded torch through engine/__init__'s lazy
    names, as did jobs.py (engine.prepared) and progress.py (engine.vgg's hashing), unseen (rev9d). Each DAEMON
    module, imported alone in a fresh interpreter, must leave torch unloaded: it loads when executors.build runs."""
    import os
    import subprocess
    import sys

    daemon_layer = sorted(name for name, layer in LAYER.items() if layer == DAEMON)
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "    assert 'torch' not in sys.modules, name + ' loads torch'\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code, *daemon_layer], cwd=ROOT.parent, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT.parent)})
    assert done.stdout.strip() == "ok", done.stderr[-800:]


def test_every_module_is_on_the_map():
    """docs/architecture.md is where a newcomer finds where things go. It named 57 of the 76 modules, leaving out the
    optimiser, the network and the hand-over thread among them (rev9d finding 13): each module is named there now,
    as `name.py` (or its path), and a new one must be too."""
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py"))
               if p.name != "__init__.py" and f"`{p.name}`" not in doc and f"/{p.name}`" not in doc]
    assert not missing, f"modules docs/architecture.md does not name: {missing}"
