"""rev6e findings 3, 4, 8, 9: the service keeps going after a person's hand in its folders and config."""
from __future__ import annotations

import shutil

from pipeline.daemon import diskguard
from pipeline.daemon.diskguard import DiskGuard


def test_guard_resumes_after_the_outbox_is_removed_to_free_space(tmp_path):
    """rev6e 3: rm -rf outbox while paused left claiming paused for good (a missing folder measured 0 bytes)."""
    folders = [tmp_path / n for n in ("work", "outbox", "failed")]
    for f in folders:
        f.mkdir()
    now = [0.0]
    guard = DiskGuard(lambda: folders, clock=lambda: now[0])
    guard.pause(folders[0])  # ENOSPC seen
    shutil.rmtree(folders[1])  # the person deletes last night's outbox to make room
    now[0] += diskguard.CHECK_SECONDS + 1
    assert not guard.paused() and guard.state is None
    assert folders[1].is_dir()  # made again, so the next output has somewhere to go
