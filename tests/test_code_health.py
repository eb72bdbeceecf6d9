"""Code-health guards for the house style (rev7e findings 5 and 6): no reach into another object's private
methods, and no def that nothing names. Each check reads the source with ast, so it runs in a second; each has a
companion showing it can fail (it finds the fault in a planted snippet)."""
from __future__ import annotations

import ast
import re
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"
SOURCES = sorted(PIPELINE.rglob("*.py"))
# Called by their frameworks, never by name in our code: watchdog's handler, torch's modules, the console script.
FRAMEWORK = {"dispatch", "forward", "backward", "main"}


def private_calls(tree: ast.AST) -> list[ast.Call]:
    """``other._name(...)``: a call through a name marked private on something other than self, cls or super()."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, name = node.func.value, node.func.attr
            if name.startswith("_") and not name.startswith("__") and not (
                    isinstance(owner, ast.Name) and owner.id in ("self", "cls", "os", "sys")) and not (
                    isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"):
                found.append(node)
    return found


def defined(tree: ast.Module) -> list[ast.AST]:
    """The module's top-level functions and classes, and its classes' methods (what another module could name)."""
    nodes = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    nodes += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body if isinstance(m, ast.FunctionDef)]
    return [n for n in nodes if not n.name.startswith("__") and n.name not in FRAMEWORK]


def corpus() -> Counter:
    """Every word in the code, tests and benches, the templates and pyproject (a console script names its function
    there): a def whose name appears only once, at its own definition, is called by nothing."""
    texts = [p.read_text() for d in ("pipeline", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    texts += [p.read_text() for p in PIPELINE.rglob("*.j2")] + [(ROOT / "pyproject.toml").read_text()]
    return Counter(re.findall(r"\w+", "\n".join(texts)))


def test_no_call_into_another_objects_private_method():
    """rev7e finding 5: pool.py called its pool's _closed/_prefetch_depth, worker.py its life's _last_resort, and the
    engine's walk, result and content_target called transfer._Run's _initial, _next_level, _picture and _content.
    Cross-module interfaces get public names; a private name is for its own class."""
    calls = [f"{p.relative_to(ROOT)}:{n.lineno} {ast.unparse(n.func)}"
             for p in SOURCES for n in private_calls(ast.parse(p.read_text()))]
    assert not calls, calls


def test_the_private_call_check_sees_one():
    tree = ast.parse("self._ok()\nsuper()._ok()\nos._exit(1)\nself.pool._closed()\nrun._initial(hw)\n")
    assert [ast.unparse(n.func) for n in private_calls(tree)] == ["self.pool._closed", "run._initial"]


def dead(tree: ast.Module, words: Counter) -> list[ast.AST]:
    """The defs named nowhere besides their own definition."""
    return [n for n in defined(tree) if words[n.name] <= 1]


def test_no_function_or_method_is_dead():
    """rev7e finding 6: a SheetWriter method (the queue size) was named nowhere. Every def is named somewhere
    besides its definition (in the code, a test or a bench); a name used only by tests still counts, as tests are
    callers too (report.build_report). A word in a comment counts too: the check can miss, never
    accuse wrongly."""
    words = corpus()
    found = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name}" for p in SOURCES for n in dead(ast.parse(p.read_text()), words)]
    assert not found, found


def test_the_dead_code_check_sees_one():
    planted = "never_" + uuid.uuid4().hex  # a name no file holds
    tree = ast.parse(f"class Sheets:\n    def {planted}(self):\n        pass\n    def __len__(self):\n        pass\n"
                     "    def close(self):\n        pass\ndef forward(x):\n    pass\n")
    assert [n.name for n in defined(tree)] == ["Sheets", planted, "close"]  # no dunders, no framework hooks
    assert [n.name for n in dead(tree, corpus())] == [planted]


def test_each_executor_logs_its_job_lines_through_the_job_life():
    """rev9d finding 11: the "job started" line was written in worker.py, pool.py and ray_executor.py, and "job record
    not saved" (the save that warns) in failures.py, pool.py and worker.py, each its own way; `duplicates` misses
    blocks that short. Each is logged from one place now (JobLife.started, save_or_warn)."""
    for event in ("job started", "job record not saved"):
        call = re.compile(r"log\.\w+\(\s*f?\"" + event)
        places = [str(p.relative_to(PIPELINE)) for p in SOURCES if call.search(p.read_text())]
        assert len(places) == 1, f"{event!r} is logged from {places}"
