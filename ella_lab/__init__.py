"""The lab: data sets, reference models and their MAP training, the side-by-side comparison (``ella compare``), the
demo, the eigen-solver experiments, trajectory recipes, reports and plots, and the ``ella`` command over them.

It is built on the library (:mod:`ella`), which never imports it, and needs the ``lab`` extra besides
(``pip install 'ella[lab]'``: matplotlib, scikit-learn, mnist1d); the library itself installs with torch, numpy and
tqdm alone."""
