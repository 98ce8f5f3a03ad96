"""The ``stitch`` command line (click), installed as ``stitch.cli``: run, compare, batch, train, bench."""
