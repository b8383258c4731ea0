"""Datasets of ``Sample``: one module per format (COCO, folder, synthetic, the demo data) and
``volumes`` for medical volumes read as slices."""
