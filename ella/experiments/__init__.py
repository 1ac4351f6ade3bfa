"""Experiments: data sets, reference models and their MAP training, the side-by-side comparison (``ella
compare``), the demo, the eigen-solver experiments, trajectory recipes, reports and plots. Everything here is
built from the library below it (:mod:`ella.methods` and the core modules); nothing below imports it."""
