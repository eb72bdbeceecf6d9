"""Every local GPU (issue 13): one executor slot per device, each with its own engine and style cache, fed from
one queue; and photos of one recipe and shape batched through the network from what is already queued.

Why slots and not Ray on one machine: a slot is a Worker thread (worker.py) on its own device, so a job's life,
checkpoints, cancels and crash recovery stay the local executor's. The slots share the pool's queue, pause flag,
cancels and JobLife (one outcome stream, one contact-sheet writer); the pool adds up their progress. A slot
that takes a job looks at what else is queued (batching.py) and runs the ones of the same recipe and shape with
it, up to its batch size; it never waits for more, so a lone photo runs alone at once.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import structlog

from ..engine import StyleTransfer
from ..engine.device import available
from .batching import ANY, JobQueue, batch_key, plan_key
from .config import Config
from .executor import Executor, Progress, left
from .jobs import JobLife, Plan, crashed
from .spool import Job, Spool
from .turns import Turns, not_begun
from .worker import Worker

log = structlog.get_logger("style-pipeline.worker")
Opened = tuple[Job, Config, Plan]


def slot_devices(config: Config) -> list[str]:
    """``devices:`` as listed; else one slot per visible GPU where the device is auto or cuda; else `device`."""
    if config.devices:
        return list(config.devices)
    gpus = [name for name in available() if name.startswith("cuda:")] if config.device in ("auto", "cuda") else []
    return gpus if len(gpus) > 1 else [config.device]


def batch_places(config: Config, cuda: bool) -> int:
    """How many photos a slot may run at once: ``batch: N``, else (auto) up to 16 with a CUDA slot and 1 without
    (a CPU gains nothing from batching). The one rule for how far claims run ahead of the slots, whether queued
    jobs get a batch key, and whether the CPU path keeps its single Worker."""
    return config.batch or (16 if cuda else 1)


def batch_size(engine: StyleTransfer, config: Config, plan: Plan) -> int:
    """``batch: N`` as configured; auto: what the free memory holds at this shape (1 off CUDA)."""
    if config.batch is not None or engine.device.type != "cuda":
        return config.batch or 1  # a CPU gains nothing from batching (engine/batch.py)
    from ..engine.batch import batch_size_for
    from ..engine.levels import for_size

    # the working shape and the recipe's own settings: the decoded photo is at its original size
    return batch_size_for(engine.device, for_size(plan.content.size, plan.settings)[0], plan.settings)


class Slot(Worker):
    """A Worker on one device whose queue, pause, cancels and job life are its pool's; it may run a batch."""

    def __init__(self, engine: StyleTransfer, pool: "Pool", index: int) -> None:
        super().__init__(engine, pool.spool, pool.get_config, pool.stop, pool.life)
        self.name, self.pool, self.index = f"worker-{index}", pool, index
        self._jobs, self._paused, self._cancels = pool._jobs, pool._paused, pool._cancels
        self.extra: list[Job] = []  # jobs taken into the batch beside the one in hand

    def respawn(self) -> "Slot":
        new = Slot(self.engine, self.pool, self.index)
        new._busy_seconds, new._marker = self._busy_seconds, self._marker + 1
        return new

    def job_closed(self) -> None:
        self.pool.job_closed()

    def prefetch_depth(self) -> int:
        return self.pool.prefetch_depth()

    def _try(self, job: Job) -> None:
        """The job's try in its turn (turns.py): beside the other slots' jobs, a kill is no one photo's crash."""
        self.pool.wake()  # a job left the queue: the main loop may claim the next one now
        structlog.contextvars.bind_contextvars(slot=self.index)
        try:
            beside = self.pool.turns.enter(job, self._stopping)
            if beside is None:  # stopped while it waited for its turn
                self.life.outcomes.put(not_begun(job))
            else:
                self._try_beside(job, beside)
        finally:
            self.pool.turns.leave(job)

    def _try_beside(self, job: Job, beside: list[Job]) -> None:
        opened = self.life.open(job, batched=bool(beside))
        self._prefetch_queued()
        if opened is None:
            return
        self.pool.turns.mark_together(job, self.life.save_or_warn)
        batch, alone = self._gather((job, *opened))
        if len(batch) > 1:
            self._run_batch(batch)
        else:
            self._run(job, *opened, behind=True)
        for other in alone:
            self._run_alone(other)
        for other in list(self.extra):  # none by now: each was handed over or released as its try ended
            self._release(other)

    def in_hand(self) -> list[Job]:
        """The job in hand and its batchmates, while this slot's thread lives."""
        return super().in_hand() + (list(self.extra) if self.is_alive() else [])

    def _release(self, job: Job) -> None:
        """An extra whose try ended in this slot (its outcome is out: failed, cancelled, already written) is no
        longer the slot's: closed once, now, and out of ``extra``, so that a slot dying later (a
        KeyboardInterrupt in an alone run) does not have it given back as crashed, a second outcome. The job in
        hand is the loop's to close, not this."""
        if any(other.id == job.id for other in self.extra):
            self.extra = [other for other in self.extra if other.id != job.id]
            self._cancels.discard(job.id)
            self.job_closed()

    def _run_alone(self, opened: Opened) -> None:
        """An extra that turned out different once opened, run alone after the batch like a lone photo: its
        result lands behind (the landing thread closes it), its fault is concluded here (released here)."""
        job = opened[0]
        with structlog.contextvars.bound_contextvars(job_id=job.id, file=job.source):
            self._guarded(job, lambda: self._run(*opened, behind=True))
        self._release(job)

    def _gather(self, first: Opened) -> tuple[list[Opened], list[Opened]]:
        """The batch: the first job and the queued ones of its recipe and shape, opened; and those that turned
        out different once opened (they run alone after it)."""
        job, config, plan = first
        key = plan_key(job, plan)
        size = self._batch_size(config, plan) if key else 1
        if size <= 1:
            return [first], []
        self.extra = self._jobs.take(key, size - 1)
        batch, alone = [first], []
        for other, opened in zip(list(self.extra), self._open_together(list(self.extra), job)):
            if opened is None:  # its try ended there (a pre-check failed, already written)
                self._release(other)
            else:
                same = plan_key(other, opened[1]) == key and opened[1].settings == plan.settings
                (batch if same else alone).append((other, *opened))
        return batch, alone

    def _open_together(self, jobs: list[Job], first: Job) -> list:
        """Each job's life.open (its try begun: an fsync'd record each; its plan, prepared ahead), side by side:
        one after another they sat between a batch's last step and the next batch's start. JobLife serves
        several slots at once already, one job each; here each thread has one job too. Each guarded: an extra
        whose failure path fails gets its own last resort (its open raised out of the batch before, and the job
        in hand got it while the other extras were stranded, never closed). Each record says it runs in a batch
        (the job in hand's saved beside them), so a kill during it is no photo's own crash (Job.charge_crash)."""
        def open_one(job: Job):
            with structlog.contextvars.bound_contextvars(job_id=job.id, file=job.source, slot=self.index):
                if job is first:
                    return self._mark_batched(job)
                return self._guarded(job, lambda: self.life.open(job, batched=True))
        return side_by_side(open_one, [*jobs, first], "open")[:-1] if jobs else []

    def _mark_batched(self, job: Job) -> None:
        """The job in hand's record says it runs in a batch; unsaved (a full disk), a kill counts as its own."""
        job.batched = job.running
        self.life.save_or_warn(job)

    def _not_running(self, job: Job) -> None:
        """As the lone worker's, the flag turned off under the turns' lock (Turns.share_blame)."""
        if self.pool.turns.stop_running(job):
            self.life.save_or_warn(job, " before its write")

    def _batch_size(self, config: Config, plan: Plan) -> int:
        """The batch's size, or 1 when it cannot be worked out: a photo must never fail because its batch could
        not be sized (on the H200 a sizing bug failed every photo of a night, before the engine saw one)."""
        try:
            return batch_size(self.engine, config, plan)
        except Exception as exc:  # noqa: BLE001 - batching is only a speed-up: the photo runs alone
            log.warning("batch not sized; the photo runs alone", error=f"{type(exc).__name__}: {exc}")
            return 1

    def _run_batch(self, batch: list[Opened]) -> None:
        """The photos through engine.stylize_batch together; each fault concluded alone, here; the results
        handed to the landing thread as one hand-over, so the slot goes on to its next batch at once."""
        jobs = [job for job, _, _ in batch]
        plan = batch[0][2]
        steps = [self._on_step(job, p) for job, _, p in batch]
        opened = self._opened()
        for job, _, p in batch:
            self.life.started(job, p, job_id=job.id, file=job.source, batch=len(batch), **opened)

        def on_step(index: int, info) -> None:
            with structlog.contextvars.bound_contextvars(job_id=jobs[index].id, file=jobs[index].source):
                steps[index](info)
        try:  # a stop or a closing window stops the batch; one photo's cancel drops that photo alone
            photos = [p.working or p.content for _, _, p in batch]  # the copies made ahead, as a lone photo's
            results = self.engine.stylize_batch(photos, plan.styles, plan.settings,
                                                on_step=on_step, should_stop=self._stopping,
                                                should_stop_one=lambda i: jobs[i].id in self._cancels)
        except Exception as exc:
            results = [exc] * len(batch)
        self._not_running_together([job for job, result in zip(jobs, results) if not isinstance(result, Exception)])
        landed = []
        for (job, config, p), result in zip(batch, results):
            with structlog.contextvars.bound_contextvars(job_id=job.id, file=job.source):
                if isinstance(result, Exception):  # guarded: a failure path's fault is this photo's alone
                    self._guarded(job, lambda job=job, result=result: self.life.conclude(job, result))
                    self._release(job)
                else:
                    landed.append((job, self._landing(job, config, p, result, len(batch))))
        if landed:
            self._land_batch_behind(landed)

    def _not_running_together(self, jobs: list[Job]) -> None:
        """The batch's records say not running, written side by side (each photo's _landing then finds its own
        saved): one fsync'd record a photo, one after another, sat between a batch's last step and the next batch
        (7 records: 47 ms in a row, 12 ms side by side on the 2-core box)."""
        side_by_side(self._not_running, jobs, "records")

    def _land_behind(self, job: Job, config: Config, plan: Plan, result) -> None:
        """A photo run alone (the job in hand or an extra run alone) lands as a batch of one: the same hand-over."""
        self._land_batch_behind([(job, self._landing(job, config, plan, result))])

    def _land_batch_behind(self, landed: list[tuple[Job, Callable[[], None]]]) -> None:
        """The batch's results to the landing thread, in order, as one hand-over (handover.Lander.submit); each
        is closed there once landed, so neither the loop (the job in hand) nor _try (self.extra) closes it, nor
        does a respawn give it back as crashed. Without a landing thread the slot lands them itself."""
        try:
            self.life.landing.submit(*(land for _, land in landed))
        except Exception:  # noqa: BLE001 - e.g. "can't start new thread": landed here, as before, closed all the same
            log.exception("the landing thread did not take the batch; landing it in the slot")
            for _, land in landed:
                land()
        ids = {job.id for job, _ in landed}
        self._handed = self._handed or (self._job is not None and self._job.id in ids)
        self.extra = [job for job in self.extra if job.id not in ids]
        self._cancels.difference_update(ids)


class Pool(Executor):
    """The executor interface over slots: one queue in, one outcome stream out, their progress added up."""

    def __init__(self, engines: list[StyleTransfer], spool: Spool, get_config: Callable[[], Config],
                 stop: threading.Event, life: JobLife | None = None) -> None:
        super().__init__("pool", spool, get_config, stop, life)
        self._jobs = JobQueue(self._batch_key)
        self.turns = Turns()  # which photos run side by side, and a suspect's turn alone (a kill's blame)
        self.slots = [Slot(engine, self, i) for i, engine in enumerate(engines)]

    def has_room(self) -> bool:
        """A job waits for each batch place a slot could fill (one off CUDA): claims overlap the running jobs."""
        return self._jobs.qsize() < self._places(self.get_config())

    def _places(self, config: Config) -> int:
        return batch_places(config, any(slot.engine.device.type == "cuda" for slot in self.slots))

    def prefetch_depth(self) -> int:
        """A batching slot takes up to ``batch_places`` photos at once, so as many are prepared ahead (never
        fewer than a lone worker's): the next batch opens without a decode in the slot (43-132 ms a batch at
        1024 px on the H200, read from its log). The queue holds no more than that (has_room), so the bound is
        one batch of decoded photos and their first working copies beside the running batch: 16 x ~12 MB for
        2400x1655 photos at the GPU's auto 16, at most 16 x 150 MB at the 50 MP max_pixels; ``batch: N`` lowers it."""
        return max(self.life.prefetch.limit, self._places(self.get_config()))

    def _batch_key(self, job: Job) -> tuple | None:
        """A queued job's batch key (its picture's header read once, as it is queued); None where no slot
        batches (off CUDA with batch unset, or batch: 1)."""
        config = self.get_config()
        return batch_key(job, config) if self._places(config) > 1 else None

    def progress(self) -> Progress:
        slots = [slot.progress() for slot in self.slots]
        dead = [slot._job for slot in self.slots if not slot.is_alive() and slot.ident is not None]
        running = [p.current for p in slots if p.current]  # every slot's photo, as Ray's current.running
        current = {**running[0], "running": running} if running else None
        return Progress(self._open > 0, self._open, sum(p.marker for p in slots), current,
                        sum(p.busy_seconds for p in slots), dead[0] if dead else None)

    def start(self) -> None:
        for slot in self.slots:
            if slot.ident is None:
                slot.start()

    def alive(self) -> bool:
        return all(slot.is_alive() for slot in self.slots)

    def respawn(self) -> "Pool":
        """The first dead slot replaced (with its device and engine); the jobs of its batch are given back as
        crashed, the one in hand by the daemon (progress().job)."""
        index = next(i for i, slot in enumerate(self.slots) if not slot.is_alive())
        dead = self.slots[index]
        for job in dead.extra:
            self.life.outcomes.put(crashed(job))
        with self._lock:
            self._open -= len(dead.extra) + (dead._job is not None)
        self.slots[index] = dead.respawn()
        return self

    def _stop_taking(self) -> list[Job]:
        unstarted = self._jobs.take(ANY, self._jobs.qsize())
        for _ in self.slots:
            self._jobs.put(None)
        return unstarted

    def _join_until(self, deadline: float) -> None:
        for slot in self.slots:
            slot.join(left(deadline))

    def in_hand(self) -> list[Job]:
        """Every live slot's jobs in hand."""
        return [job for slot in self.slots for job in slot.in_hand()]


def local_executor(config: Config, engine: StyleTransfer | None, spool: Spool, get_config: Callable[[], Config],
                   stop: threading.Event) -> tuple[Executor, StyleTransfer]:
    """The local executor and its first engine: the one Worker of old where one CPU slot runs one photo at a
    time (the CPU path unchanged), else a Pool of a slot per device (``engine``, when given, is the first)."""
    devices = slot_devices(config)
    engine = engine or StyleTransfer(config.weights, devices[0], cache_size=config.cache_styles)
    if len(devices) == 1 and engine.device.type != "cuda" and batch_places(config, cuda=False) == 1:
        return Worker(engine, spool, get_config, stop), engine
    engines = [engine] + [StyleTransfer(config.weights, name, cache_size=config.cache_styles) for name in devices[1:]]
    log.info("executor slots", devices=[str(e.device) for e in engines], batch=config.batch or "auto")
    return Pool(engines, spool, get_config, stop), engine


def side_by_side(work: Callable, items: Sequence, name: str) -> list:
    """``work`` over ``items``, each in its own thread, the results in order; the first error raised again here, as
    a loop would. Where a thread cannot be started ("can't start new thread"), its item runs here instead: each
    item runs exactly once (a pool's submit queues the item before it starts a thread, so its failure leaves the
    item to run later, or twice), and a batch's made results are never lost to the threads that write them."""
    if len(items) < 2:
        return [work(item) for item in items]
    results, errors, threads = [None] * len(items), [None] * len(items), []

    def one(k: int) -> None:
        try:
            results[k] = work(items[k])
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread: a SystemExit
            errors[k] = exc  # left None with no error, read as "its try ended" (_gather), the job had no outcome
    for k in range(len(items)):
        thread = threading.Thread(target=one, args=(k,), name=f"{name}_{k}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: this one here, one after another
            one(k)
        else:
            threads.append(thread)
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results

