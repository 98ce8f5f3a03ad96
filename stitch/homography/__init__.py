"""The pair pipeline: features, matching, robust candidates, the quality score, selection and refinement.

Modules: ``features`` (detectors), ``matching`` (descriptor matching), ``candidates`` (robust estimators),
``quality`` (the stitching-quality score), ``select`` (the bottom-up search and ``estimate_homography``),
``refine`` (least squares, ECC, and the learned refiner by name).
"""
