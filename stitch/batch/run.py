"""The coordinator: ``run_batch(root, out, ...)`` streams the sets of ROOT through a backend into OUT.

Sets are discovered lazily (one folder at a time), keyed, skipped when the manifest already has them with
the same key, and handed to the backend, which keeps at most ``workers`` of them running. Each result is
appended to the manifest as it arrives and then dropped: the coordinator keeps counters and the first
``MAX_LISTED_FAILURES`` failures, so its memory does not grow with the number of sets (apart from the
resume lookup of the manifest, ~0.2 KB per set found there). At the end the HTML index is rewritten.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stitch.batch.backends import DEFAULT_BACKEND, Job, JobFn, Limits, make_backend
from stitch.batch.index import write_index
from stitch.batch.jobs import STATUS_FAILED, STATUS_OK, STATUSES, JobOptions, SetResult, run_set
from stitch.batch.manifest import DEFAULT_KEY_MODE, KEY_MODES, Manifest, set_key
from stitch.batch.sets import DEFAULT_COUNT, DEFAULT_GAP_S, DEFAULT_GROUPING, count_sets, discover_sets
from stitch.errors import ConfigError, ImageReadError, check_choice

#: The summary keeps this many failures by name (the manifest and the index have all of them).
MAX_LISTED_FAILURES = 50

#: on_set(name, result or None when skipped as done, done, total).
SetCallback = Callable[[str, "SetResult | None", int, int], None]


@dataclass
class BatchSummary:
    """Counters of one batch run (no per-set data beyond the first failures)."""

    root: str
    out: str
    backend: str
    workers: int
    total: int = 0
    skipped: int = 0
    #: sets skipped because they failed before with the same inputs and options (not redone without
    #: retry_failed): still failed, counted in ``failed`` and listed in ``failures``
    failed_before: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    dropped: int = 0
    warned: int = 0
    job_seconds: float = 0.0
    setup_seconds: float = 0.0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    more_failures: int = 0
    index: str | None = None
    manifest: str | None = None
    #: Peak resident memory of this (the coordinator) process in MB, job processes excluded.
    peak_rss_mb: float = 0.0

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        """Sets that failed this run, plus those that failed before and were not redone."""
        return self.ran - self.counts.get(STATUS_OK, 0) + self.failed_before

    def add_failure(self, name: str, status: str, reason: str) -> None:
        """List a failed set (the first MAX_LISTED_FAILURES; the rest are counted in ``more_failures``)."""
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append((name, status, reason))
        else:
            self.more_failures += 1

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "out": self.out, "backend": self.backend, "workers": self.workers,
                "total": self.total, "skipped": self.skipped, "failed_before": self.failed_before, "ran": self.ran,
                "failed": self.failed,
                "counts": {s: self.counts.get(s, 0) for s in STATUSES}, "kept": self.kept, "dropped": self.dropped,
                "sets_with_warnings": self.warned, "job_seconds": round(self.job_seconds, 3),
                "setup_seconds": round(self.setup_seconds, 3), "seconds": round(self.seconds, 3),
                "failures": [{"set": n, "status": s, "reason": r} for n, s, r in self.failures],
                "more_failures": self.more_failures, "index": self.index, "manifest": self.manifest,
                "peak_rss_mb": round(self.peak_rss_mb, 1)}


def check_out(root: Path, out: Path) -> list[Path]:
    """Refuse OUT == ROOT, OUT above ROOT (set folders would land on the inputs) or a file; returns the folders
    discovery must skip (OUT when it lies inside ROOT)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (-o needs a folder)")
    r, o = root.resolve(), out.resolve()
    if r == o:
        raise ConfigError(f"{out}: is the input folder; choose another output folder")
    if o in r.parents:
        raise ConfigError(f"{out}: contains the input folder {root}; choose an output folder outside it")
    return [out] if r in o.parents else []


def check_extras(root: Path, out: Path, options: JobOptions) -> list[Path]:
    """Refuse a mask, timelapse or debug folder that would mix with the inputs (see JobOptions); returns the
    folders discovery must skip (a mask folder inside ROOT: its masks are no set)."""
    r, o = root.resolve(), out.resolve()
    skip = []
    for option, value in (("--mask-dir", options.mask_dir), ("--timelapse", options.timelapse),
                          ("--debug-dir", options.debug_dir)):
        if value is None:
            continue
        d = Path(value)
        where = d.resolve()
        if where == r or where in r.parents:
            raise ConfigError(f"{d}: {option} must not be the input folder {root} or hold it; choose another folder")
        inside = r in where.parents
        if option == "--mask-dir":
            if not d.is_dir():
                raise ImageReadError(f"{d}: mask folder not found (--mask-dir)")
            skip += [d] if inside else []
        elif d.exists() and not d.is_dir():
            raise ConfigError(f"{d}: exists and is not a folder ({option} needs a folder)")
        elif inside and not (where == o or o in where.parents):
            raise ConfigError(f"{d}: {option} lies inside the input folder {root}; choose a folder outside it "
                              "(or -o's folder)")
    return skip


def run_batch(root: str | Path, out: str | Path, options: JobOptions | None = None, *,
              group_by: str = DEFAULT_GROUPING, gap_s: float = DEFAULT_GAP_S, count: int = DEFAULT_COUNT,
              backend: str = DEFAULT_BACKEND, workers: int = 0, address: str | None = None,
              limits: Limits | None = None, key_mode: str = DEFAULT_KEY_MODE, retry_failed: bool = False,
              job_fn: JobFn = run_set, on_total: Callable[[int], None] | None = None,
              on_set: SetCallback | None = None) -> BatchSummary:
    """Stitch every set under ``root`` into ``out/<set>/`` (see the module docstring); returns the counters.

    ``workers``: sets at a time (0: one per CPU of this machine, or of the Ray cluster at ``address``).

    ``job_fn`` must be a function of an importable module, not of ``__main__`` (the job processes import it by
    name and never run the main module).
    """
    root, out = Path(root).absolute(), Path(out).absolute()  # jobs may run elsewhere (a Ray worker's own cwd)
    options = (options or JobOptions()).absolute()
    limits = limits or Limits()
    limits.check()
    check_choice("key", key_mode, KEY_MODES)
    grouping = {"group_by": group_by, "gap_s": gap_s, "count": count}
    exclude = check_out(root, out) + check_extras(root, out, options) if root.is_dir() else []
    total = count_sets(root, exclude=exclude, **grouping)
    if on_total is not None:
        on_total(total)
    summary = BatchSummary(str(root), str(out), backend, workers, total=total)
    counts: Counter[str] = Counter()
    t0 = time.perf_counter()
    entered = False  # the index is written once this run holds the manifest (not when another run does)
    try:
        with Manifest(out) as manifest:
            entered = True
            done = 0

            def jobs() -> Iterator[Job]:
                nonlocal done
                for spec in discover_sets(root, exclude=exclude, **grouping):
                    key = set_key(spec, options, key_mode)
                    prev = manifest.previous.get(spec.name)
                    if manifest.is_done(spec.name, key) and not (retry_failed and prev and prev[1] == STATUS_FAILED):
                        if prev is not None and prev[1] == STATUS_FAILED:  # still failed: its reason stands
                            summary.failed_before += 1
                            summary.add_failure(spec.name, prev[1], f"{prev[2]} (failed before; --retry-failed redoes it)")
                        else:
                            summary.skipped += 1
                        done += 1
                        if on_set is not None:
                            on_set(spec.name, None, done, total)
                        continue
                    yield Job(spec, key, options, out, limits, job_fn)

            engine = make_backend(backend, workers, address, limits.cpus)
            summary.workers = engine.workers
            summary.setup_seconds = time.perf_counter() - t0
            try:
                for job, result in engine.run(jobs()):
                    manifest.record(job.key, result)
                    done += 1
                    counts[result.status] += 1
                    summary.job_seconds += result.seconds
                    summary.kept += result.kept
                    summary.dropped += result.dropped
                    summary.warned += bool(result.warnings)
                    if result.status != STATUS_OK:
                        summary.add_failure(result.name, result.status, result.reason)
                    if on_set is not None:
                        on_set(result.name, result, done, total)
            finally:
                engine.close()
                summary.counts = dict(counts)
                summary.seconds = time.perf_counter() - t0
    finally:  # also after Ctrl-C or a failure: the index shows the sets finished so far
        if entered:
            summary.index = str(write_index(out, title=f"stitch batch: {root}"))
    summary.manifest = str(manifest.path)
    summary.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KB
    return summary

