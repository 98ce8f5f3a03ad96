"""Many photos into one panorama: pair graph, adjustment, projections, exposure, seams, blending, crop.

Modules: ``pipeline`` (``stitch_images``: pair graph and joint adjustment), ``warp`` (projections and
canvases), ``views`` (images placed on the low-resolution canvas), ``exposure``, ``seams``, ``blend``,
``crop``, ``compose`` (the compositing stages in order) and ``debug`` (intermediate images on request).
"""
