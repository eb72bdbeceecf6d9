"""How `make test` (pytest-xdist, ``-n auto --dist loadgroup``) spreads the tests over its workers.

Two things, both on the order and the names the workers send the controller:

- The longest tests first. xdist hands out the tests in collection order, one or two at a time, so the run ends
  when the last test handed out ends: with the files in alphabetical order a daemon test of a late file could keep
  one worker busy while the other stood idle. The files that hold the suite's longest tests (measured with
  ``--durations``, 2-core box) now come first, each file's own order kept (module fixtures stay set up once);
  the rest follow as collected.
- The xdist_group mark works again. xdist 3.8 groups a test by adding ``@group`` to ``item._nodeid``, which
  pytest 9 no longer reads (the node id lives in ``item._id``): test_ray's tests, meant to run on one worker
  ("never two local Ray instances at once"), were spread over both. The suffix is set where pytest 9 reads it,
  unless xdist already did.
"""
from __future__ import annotations

import pytest

# The files holding the longest tests, by their longest test (--durations of a full run, 2-core box, session 8;
# session 9's new ones from targeted runs, 2-core box);
# test_ray's group goes first anyway (xdist hands out its largest group first).
LONGEST_FIRST = (
    "test_daemon.py",  # 200 drops through a real daemon; two daemons on 40
    "test_batch_faults.py",
    "test_daemon_faults.py",  # five daemon starts for the crash counts; reload over a backlog
    "test_pool_crashes.py",  # session 9: three daemon starts around a kill with two slots (18 s quiet)
    "test_folder_faults.py",  # session 9: restarts while paused (14 s each), a read-only spool disk (12 s)
    "test_reload_retry.py",  # session 9: a recipe refused, then loaded (14 s)
    "test_running_folders.py",  # session 9: two daemons of one config (11 s)
    "test_exactly_once.py",
    "test_joblog.py",
    "test_engine.py",
    "test_eta.py",
    "test_setup.py",
    "test_batch_landing.py",
    "test_report.py",
    "test_batch.py",
    "test_stale_temps.py",
    "test_pool.py",
    "test_recipe_blend.py",
    "test_jobs.py",
    "test_observe.py",
    "test_sidecar_unpaired.py",
    "test_handover.py",
    "test_daemon_mends.py",
    "test_report_state.py",
    "test_checkpoints.py",
    "test_executor.py",
)


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def _group(item: pytest.Item) -> None:
    """``nodeid@group`` for a test marked xdist_group, as xdist's loadgroup scheduler reads it."""
    names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                    for mark in item.iter_markers("xdist_group")})
    if names and "@" not in item.nodeid.rpartition("]")[2].rpartition("::")[2]:
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each file's tests keep their order
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        for item in items:
            if hasattr(item, "_id"):
                _group(item)
