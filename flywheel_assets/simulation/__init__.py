"""The simulated world: a feedback source with hidden ground truth.

It sits outside the pipeline: it writes landing files as a product would and keeps its
truth under ``data/world/``. No product code imports this package (a test checks).
"""
