"""The batch manifest: ``OUT/manifest.jsonl``, one JSON line per finished set, appended and fsync'ed.

Each line is a SetResult plus ``key``, a hash of the set's inputs and options: a re-run skips a set whose
latest line has the same key and a final status (``ok``, or ``failed``: the set itself is bad), and redoes a
set that has no line (it was running when the batch stopped), a changed key (changed images, override file
or options), or a resource failure (timeout, out of memory, crash: ``RETRY_STATUSES``).

Crash safety: a line is written only after the set's outputs are in place (each written atomically by the
job), and with one ``write`` of a whole line followed by ``fsync``. A ``kill -9`` at any moment therefore
loses at most the sets that were running; a torn last line (only possible if the machine itself stops
mid-write) is cut off when the manifest is next opened. One coordinator at a time: ``OUT/.batch.lock``.

The key (``KEY_MODES``): 'stat' (the default) hashes each file's name, size and modification time (ns);
'content' hashes the bytes. Why 'stat' by default: a resume must not read every image of a large archive
again (on a network file system that re-read costs as much as a large part of the stitching itself),
while an edited, replaced or re-exported image gets a new modification time or size. 'content' is
for trees whose files are rewritten with their old times kept (``cp -p``/``rsync -a`` of other files
over them) or moved between file systems that do not keep modification times.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from stitch import __version__
from stitch.batch.jobs import RETRY_STATUSES, JobOptions, SetResult, set_masks, set_options
from stitch.batch.sets import SetSpec
from stitch.errors import ConfigError, StitchError

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".batch.lock"
HASH_CHUNK = 1 << 20


def stat_fingerprint(path: Path) -> str:
    """Size and modification time (ns) of a file."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def content_fingerprint(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


#: --key: name -> fingerprint of one input file.
KEY_MODES: dict[str, Callable[[Path], str]] = {"stat": stat_fingerprint, "content": content_fingerprint}
KEY_MODE_CHOICES = tuple(KEY_MODES)
DEFAULT_KEY_MODE = "stat"


def effective_config(spec: SetSpec, options: JobOptions) -> Any:
    """The set's full PanoramaConfig as plain data (defaults filled in, so spelling a default out changes
    nothing); the raw options and overrides when they are invalid (the set will fail with the reason)."""
    from stitch.panorama.config import PanoramaConfig

    try:
        return asdict(PanoramaConfig.from_options(**set_options(spec, options)))
    except (ConfigError, TypeError):
        if not spec.overrides:
            return {"stitch": options.stitch}
        base = SetSpec(spec.name, spec.folder, spec.files)
        return {"base": effective_config(base, options), "overrides": spec.overrides}


def set_key(spec: SetSpec, options: JobOptions, mode: str = DEFAULT_KEY_MODE) -> str:
    """Hex key of a set: the stitch version, the options (the extras' folders too), the set's overrides, and
    each input's and feature mask's fingerprint."""
    fingerprint = KEY_MODES[mode]
    h = hashlib.sha256()
    head = {"version": __version__, "config": effective_config(spec, options), "image_ext": options.image_ext,
            "thumb_side": options.thumb_side, "error": spec.error, "key": mode}
    head.update({k: v for k, v in (("mask_dir", options.mask_dir), ("debug_dir", options.debug_dir)) if v is not None})
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    try:
        masks = [m for m in set_masks(spec, options)[0] or [] if m is not None]
    except StitchError as exc:  # the set will fail with it
        h.update(str(exc).encode())
        masks = []
    for kind, p in [("", p) for p in spec.files] + [("mask ", m) for m in masks]:
        try:
            fp = fingerprint(p)
        except OSError as exc:
            fp = f"unreadable:{exc.errno}"
        h.update(f"\n{kind}{p.name}\0{fp}".encode())
    return h.hexdigest()[:32]


def is_final(record: dict[str, Any]) -> bool:
    """A record that a re-run with the same key keeps (ok or a bad set), as opposed to a resource failure."""
    return record.get("status") not in RETRY_STATUSES


class Manifest:
    """Append-only manifest of one OUT folder (see the module docstring); use as a context manager.

    Holds in memory only ``set name -> (key, status)`` of the records found when it was opened (about
    0.2 KB per set), never the results of this run.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / MANIFEST_NAME
        self.previous: dict[str, tuple[str, str, str]] = {}  # name -> (key, status, reason) of its last record
        self.torn = 0
        self._fh: TextIO | None = None
        self._lock: int | None = None

    def __enter__(self) -> Manifest:  # noqa: PYI034 (not subclassed)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            self._lock = None
            raise StitchError(f"{self.out}: another stitch batch is writing there (lock {LOCK_NAME} is held)") from None
        self._cut_torn_tail()
        for record in read_records(self.path):
            self.previous[record["name"]] = (record.get("key", ""), record.get("status", ""), record.get("reason", ""))
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline (a write the machine did not finish)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            size = fh.seek(0, os.SEEK_END)
            pos = size
            while pos > 0:
                step = min(HASH_CHUNK, pos)
                fh.seek(pos - step)
                block = fh.read(step)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    pos = pos - step + nl + 1
                    break
                pos -= step
            fh.truncate(max(pos, 0))
            self.torn += 1

    def is_done(self, name: str, key: str) -> bool:
        """Whether set ``name`` with ``key`` has a final record (a re-run skips it)."""
        prev = self.previous.get(name)
        return prev is not None and prev[0] == key and is_final({"status": prev[1]})

    def record(self, key: str, result: SetResult) -> None:
        """Append one line for a finished set and fsync it."""
        if self._fh is None:
            raise StitchError(f"{self.path}: manifest is not open")
        line = json.dumps({"key": key, **result.to_json(),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every well-formed record of a manifest, in file order (a malformed line is skipped)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                yield record


def latest_records(path: Path) -> Iterator[dict[str, Any]]:
    """The latest record of each set, sorted by set name (holds only name -> file offset)."""
    if not path.exists():
        return
    offsets: dict[str, int] = {}
    with open(path, "rb") as fh:
        pos = 0
        for raw in fh:
            try:
                name = json.loads(raw).get("name")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                name = None
            if isinstance(name, str):
                offsets[name] = pos
            pos += len(raw)
        for name in sorted(offsets):
            fh.seek(offsets[name])
            yield json.loads(fh.readline())
