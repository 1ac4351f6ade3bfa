"""Side-by-side comparison of every method on the same MAP network (``ella compare``, ``benchmarks/run.py``).

=================  ==========================================================================
module             concept
=================  ==========================================================================
``problems``       a data set, its MAP network and training recipe, built from one seed
``methods``        the registry of compared methods (one builder per table row) and their settings
``driver``         one problem: fit, score, cost, fidelity to exact LLA, shift and OOD per method
``benchmark``      several problems, their shift / OOD sets, the results document
``report``         ``results.json``, ``results.md`` and the figures
``shift``          corrupted and out-of-distribution test sets
``cost``           wall time and peak memory of a call
``fidelity``       NLL gap and predictive-variance error against exact LLA
``plots``          shift curves and regression bands
=================  ==========================================================================
"""

from .benchmark import ALL_PROBLEMS, compare, run_benchmark
from .driver import MethodFailed, compare_problem
from .methods import METHODS, NotApplicable, Settings, register
from .problems import Problem, make_problem

__all__ = [
    "compare",
    "run_benchmark",
    "compare_problem",
    "ALL_PROBLEMS",
    "MethodFailed",
    "Settings",
    "METHODS",
    "NotApplicable",
    "register",
    "Problem",
    "make_problem",
]
