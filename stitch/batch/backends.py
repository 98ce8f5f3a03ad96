"""Where the jobs run: ``BACKENDS`` maps a name to an implementation ('local': processes here; 'ray': Ray tasks).

Isolation is the same on both: every set runs in a child process of its own (``start_guarded``), forked from a
pre-loaded server (multiprocessing 'forkserver': milliseconds per start instead of a second of imports), with

- a memory cap: ``RLIMIT_AS`` set in the child, so an allocation past it raises MemoryError (status 'oom');
- a time limit: the parent kills the child at its deadline (status 'timeout'); the child also arms an alarm a
  few seconds later, and dies with its parent (``PR_SET_PDEATHSIG``), so no job outlives a killed batch.

A child that dies without a result (a signal, the system's OOM killer) is 'crashed' with the signal named.
The local backend keeps ``workers`` children running; the Ray backend runs the same guarded child inside one
Ray task per set, declaring ``num_cpus``, ``memory`` and, when the set uses a learned stage and
``gpus_per_set`` > 0, ``num_gpus``; the coordinator cancels a task that outlives its limit by a margin.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import math
import multiprocessing
import os
import resource
import signal
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from stitch.batch.jobs import (
    STATUS_CRASHED,
    STATUS_OOM,
    STATUS_TIMEOUT,
    JobOptions,
    SetResult,
    remove_stale,
    run_set,
    set_dir,
    set_options,
    write_log,
)
from stitch.batch.sets import SetSpec
from stitch.errors import ConfigError, StitchError, install_hint, one_line

#: Seconds a set may run (0: no limit).
DEFAULT_TIMEOUT_S = 600.0
#: Address-space cap per set in MB (0: no cap). A small set needs ~1 GB of address space (libraries included).
DEFAULT_MEMORY_MB = 4096
#: The child's own alarm fires this long after its deadline (a backstop should its parent be gone).
ALARM_GRACE_S = 5.0
#: Largest limits: signal.alarm takes a C int of seconds, setrlimit a 64-bit byte count.
MAX_TIMEOUT_S = float(2 ** 31 - 1 - 2 * ALARM_GRACE_S)
MAX_MEMORY_MB = 2 ** 40
#: A Ray task is cancelled this long after its set's limit (the task's own guard normally ends it first).
RAY_CANCEL_GRACE_S = 30.0
#: Values of the pair refiner that are learned stages (a GPU helps them).
LEARNED_REFINERS = ("deep",)
RAY_INSTALL_HINT = f"the ray backend needs Ray: {install_hint('ray')}"
#: Modules the fork server imports once, so each job starts without importing them again.
PRELOAD = ["stitch.batch.jobs", "stitch.panorama.pipeline", "cv2", "numpy", "scipy.optimize"]
PR_SET_PDEATHSIG = 1
#: One BLAS/OpenMP thread per job, like its matcher and OpenCV: parallel jobs do not oversubscribe the cores,
#: and results do not depend on the machine's core count (Ray sets OMP_NUM_THREADS in its workers too).
JOB_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

JobFn = Callable[[SetSpec, JobOptions, Path], SetResult]


@dataclass(frozen=True)
class Limits:
    """Per-set resources: a wall-clock limit (s), an address-space cap (MB), CPUs and GPUs to declare (Ray)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: float = 1.0
    gpus: float = 0.0

    def check(self) -> None:
        if not 0 <= self.timeout_s <= MAX_TIMEOUT_S:
            raise ConfigError(f"timeout={self.timeout_s}: must be between 0 and {MAX_TIMEOUT_S:g} seconds (0: no limit)")
        if not (isinstance(self.memory_mb, int) and 0 <= self.memory_mb <= MAX_MEMORY_MB):
            raise ConfigError(f"memory_mb={self.memory_mb}: must be an integer between 0 and {MAX_MEMORY_MB} (0: no cap)")
        if not self.cpus > 0:
            raise ConfigError(f"cpus_per_set={self.cpus}: must be > 0")
        if not self.gpus >= 0:
            raise ConfigError(f"gpus_per_set={self.gpus}: must be >= 0")


@dataclass(frozen=True)
class Job:
    """One set to run: its spec and key, the shared options, OUT, the limits, and the job function."""

    spec: SetSpec
    key: str
    options: JobOptions
    out: Path
    limits: Limits = field(default_factory=Limits)
    fn: JobFn = run_set


# --- the guarded child ---------------------------------------------------------------------------------------


def process_context() -> Any:
    """The multiprocessing context of the job children: a fork server with the pipeline pre-imported."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


@contextmanager
def main_hidden() -> Iterator[None]:
    """Start children without the main module: they would re-run it (and all it imports: the CLI, or a Ray
    worker's ray) before each job, as multiprocessing's spawn does, for nothing (jobs live in importable modules)."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent exits (no orphaned jobs)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_main(conn: Connection, job: Job) -> None:
    """Body of a job child: cap memory, arm the alarm, run the job, send the result back."""
    die_with_parent()
    if job.limits.memory_mb > 0:
        cap = job.limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if job.limits.timeout_s > 0:
        signal.alarm(math.ceil(job.limits.timeout_s + ALARM_GRACE_S))
    try:
        result = job.fn(job.spec, job.options, job.out)
    except MemoryError as exc:
        result = SetResult(job.spec.name, STATUS_OOM, f"out of memory ({one_line(exc)[:200]})",
                           images=len(job.spec.files))
    if result.status == STATUS_OOM and job.limits.memory_mb > 0:
        result.reason += f"; the cap is --memory-mb {job.limits.memory_mb}"
    conn.send(result)
    conn.close()


class Guarded:
    """A running job child: its process, the result pipe, and its deadline (monotonic s, inf: none)."""

    def __init__(self, job: Job, ctx: Any) -> None:
        warm_up()
        self.job = job
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=child_main, args=(send, job), name=f"stitch-set:{job.spec.name}", daemon=True)
        self.started = time.monotonic()
        with main_hidden():
            self.proc.start()
        send.close()
        self.deadline = self.started + job.limits.timeout_s if job.limits.timeout_s > 0 else math.inf
        self.killed = False

    def handles(self) -> list[Any]:
        return [self.recv, self.proc.sentinel]

    def done(self) -> bool:
        return self.recv.poll() or not self.proc.is_alive()

    def kill(self) -> None:
        self.killed = True
        self.proc.kill()

    def outcome(self) -> SetResult:
        """The child's result, or a timeout/crash result (the set's folder cleaned and its log written)."""
        result = None
        try:
            if self.recv.poll():
                result = self.recv.recv()
        except (EOFError, OSError):
            result = None
        self.proc.join()
        self.recv.close()
        if isinstance(result, SetResult):
            return result
        return failure_result(self.job, self.killed, self.proc.exitcode, time.monotonic() - self.started)


def failure_result(job: Job, killed: bool, exitcode: int | None, seconds: float, reason: str = "") -> SetResult:
    """A result for a child that gave none; cleans the set's folder (no partial outputs) and writes its log."""
    spec = job.spec
    if reason:
        status = STATUS_CRASHED
    elif killed or exitcode == -signal.SIGALRM:
        status, reason = STATUS_TIMEOUT, f"time limit: killed after {job.limits.timeout_s:g} s"
    elif exitcode == -signal.SIGKILL:
        status, reason = STATUS_CRASHED, "killed by SIGKILL (the system's out-of-memory killer?)"
    elif exitcode is not None and exitcode < 0:
        status, reason = STATUS_CRASHED, f"died from signal {signal.Signals(-exitcode).name}"
    else:
        status, reason = STATUS_CRASHED, f"exited with status {exitcode} without a result"
    result = SetResult(spec.name, status, reason, seconds=round(seconds, 3), images=len(spec.files))
    folder = set_dir(job.out, spec.name)
    try:
        remove_stale(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_log(folder, spec, result)
    except (OSError, StitchError) as exc:
        result.reason += f"; cannot write its log ({one_line(exc)})"
    return result


def warm_up() -> None:
    """Start this process's fork server if it is not running (it imports the pipeline once), with one BLAS and
    OpenMP thread per job (JOB_THREAD_ENV, in the server's environment only)."""
    from multiprocessing import forkserver

    process_context()
    saved = {k: os.environ.get(k) for k in JOB_THREAD_ENV}
    os.environ.update(JOB_THREAD_ENV)
    try:
        forkserver.ensure_running()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_guarded(job: Job) -> SetResult:
    """Run one job in a guarded child and wait for it (the body of a Ray task)."""
    g = Guarded(job, process_context())
    while not g.done():
        left = g.deadline - time.monotonic()
        if left <= 0:
            g.kill()
            break
        wait(g.handles(), timeout=min(left, 3600.0))
    return g.outcome()


# --- backends --------------------------------------------------------------------------------------------


def take(pending: Iterator[Job], n: int) -> list[Job]:
    """The next ``n`` jobs of the stream (fewer at its end): a backend pulls only what it can start."""
    return list(itertools.islice(pending, max(n, 0)))


class LocalBackend:
    """``workers`` guarded children at a time on this machine."""

    name = "local"

    def __init__(self, workers: int, address: str | None = None, cpus_per_set: float = 1.0) -> None:
        if address:
            raise ConfigError("--address is for the ray backend; the local backend runs on this machine")
        self.workers = workers or os.cpu_count() or 1
        self.ctx = process_context()
        warm_up()

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, SetResult]]:
        """(job, result) as sets finish (not in input order); pulls jobs lazily, at most ``workers`` running."""
        pending = iter(jobs)
        running: list[Guarded] = []
        try:
            while True:
                running += [Guarded(job, self.ctx) for job in take(pending, self.workers - len(running))]
                if not running:
                    return
                now = time.monotonic()
                for g in running:
                    if not g.done() and g.deadline <= now:
                        g.kill()
                finished = [g for g in running if g.done()]
                if not finished:
                    nearest = min(g.deadline for g in running) - now
                    wait([h for g in running for h in g.handles()], timeout=min(max(nearest, 0.0), 3600.0))
                    continue
                for g in finished:
                    running.remove(g)
                    yield g.job, g.outcome()
        finally:
            for g in running:  # the consumer stopped early (Ctrl-C): no job outlives the batch
                g.kill()
                g.proc.join()

    def close(self) -> None:
        pass


def ray_module() -> Any:
    """The ray package, or ConfigError with the one-line install hint."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_INSTALL_HINT) from None
    return ray


def uses_learned_stage(job: Job) -> bool:
    """Whether the set's options select a learned stage (the deep refiner), which can use a GPU."""
    try:
        return set_options(job.spec, job.options).get("refiner") in LEARNED_REFINERS
    except ConfigError:
        return False


class RayBackend:
    """One Ray task per set (the same guarded child inside); a local Ray instance unless ``address`` is given.

    An already initialised Ray (e.g. by a test or a notebook) is used as it is and left running.
    """

    name = "ray"

    def __init__(self, workers: int, address: str | None = None, cpus_per_set: float = 1.0) -> None:
        ray = ray_module()
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=math.ceil((workers or os.cpu_count() or 1) * cpus_per_set), **kwargs)
            self.started = True
        cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
        self.workers = workers or max(1, int(cluster_cpus // cpus_per_set))
        self.task = ray.remote(run_guarded)
        warm = ray.remote(warm_up).options(num_cpus=cpus_per_set)
        ray.get([warm.remote() for _ in range(min(self.workers, max(1, int(cluster_cpus // cpus_per_set))))])

    def task_options(self, job: Job) -> dict[str, Any]:
        """Ray resources of one set: CPUs, memory (bytes), GPUs when it has a learned stage; no retries."""
        opts: dict[str, Any] = {"num_cpus": job.limits.cpus, "max_retries": 0}
        if job.limits.memory_mb > 0:
            opts["memory"] = job.limits.memory_mb * 2**20
        if job.limits.gpus > 0 and uses_learned_stage(job):
            opts["num_gpus"] = job.limits.gpus
        return opts

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, SetResult]]:
        """(job, result) as tasks finish; at most ``workers`` tasks in flight (the set list is never materialised)."""
        ray = self.ray
        pending = iter(jobs)
        flight: dict[Any, tuple[Job, float]] = {}
        try:
            while True:
                for job in take(pending, self.workers - len(flight)):
                    flight[self.task.options(**self.task_options(job)).remote(job)] = (job, time.monotonic())
                if not flight:
                    return
                ready, _ = ray.wait(list(flight), num_returns=1, timeout=1.0)
                now = time.monotonic()
                for ref, (job, t0) in list(flight.items()):
                    late = job.limits.timeout_s > 0 and now - t0 > job.limits.timeout_s + RAY_CANCEL_GRACE_S
                    if ref not in ready and late:
                        ray.cancel(ref, force=True)
                        del flight[ref]
                        yield job, failure_result(job, True, None, now - t0)
                for ref in ready:
                    job, t0 = flight.pop(ref)
                    yield job, self.fetch(ref, job, t0)
        finally:
            for ref in flight:
                ray.cancel(ref, force=True)

    def fetch(self, ref: Any, job: Job, t0: float) -> SetResult:
        """The task's result; a Ray-level failure (worker died, node lost) becomes a 'crashed' result."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            reason = f"ray task failed ({type(exc).__name__}: {one_line(exc)[:200]})"
            return failure_result(job, False, None, time.monotonic() - t0, reason)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


#: --backend: name -> implementation; the CLI's choices and the bench read this table.
BACKENDS: dict[str, type] = {"local": LocalBackend, "ray": RayBackend}
BACKEND_CHOICES = tuple(BACKENDS)
DEFAULT_BACKEND = "local"


def make_backend(name: str, workers: int = 0, address: str | None = None, cpus_per_set: float = 1.0) -> Any:
    """A started backend by name; ``workers`` sets at a time (0: this machine's CPUs, or the Ray cluster's
    CPUs / ``cpus_per_set``). ConfigError for an unknown name, a bad count, or Ray missing."""
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    if not (isinstance(workers, int) and workers >= 0):
        raise ConfigError(f"workers={workers}: must be a non-negative integer (0: one per CPU)")
    return BACKENDS[name](workers, address, cpus_per_set)
