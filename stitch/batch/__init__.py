"""Batch stitching: a tree of folders -> one isolated job per set (local pool or Ray) -> manifest -> outputs + index.

Modules: sets (discovery, grouping, per-set ``stitch.toml``), jobs (``run_set``: one set, a pure function),
manifest (resumable record keyed by inputs + options), backends (``BACKENDS``: local processes, Ray tasks,
each with a time limit and a memory cap per set), index (the HTML index), run (``run_batch``: the coordinator).
"""
