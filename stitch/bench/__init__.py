"""Benchmarks: ground-truth datasets, error metrics, the OpenCV baselines, and one module per benchmark.

``homography`` (real pairs with ground truth), ``panorama`` (panoramas against the peers) and
``synthetic`` (the DeTone protocol and the refiner regime). Their goals live with the ``stitch bench``
command (``stitch.cli.bench_cmd``), not here.
"""
