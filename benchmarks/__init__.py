"""The benchmarks: each a module (``from benchmarks import scale``, as the tests import them) and a script
(``python benchmarks/scale.py``) that measures one claim and writes its figures to ``benchmarks/results``. They use
the library and the lab (``ella_lab``), never each other."""
