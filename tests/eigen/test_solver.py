"""The solver contract's registry: every solver name a method takes builds that solver from its kind."""

import pytest
from torch import nn

from ella import names
from ella.eigen import REGISTRY, EigenSolver, ExactEigen, NeuralEF, Nystrom, SpIN


@pytest.mark.parametrize(
    "name, cls", [("neuralef", NeuralEF), ("nystrom", Nystrom), ("exact", ExactEigen), ("spin", SpIN)]
)
def test_every_solver_name_is_registered_and_builds_its_solver(name, cls):
    assert name in names.SOLVERS and REGISTRY[name] is cls
    model = nn.Sequential(nn.Linear(2, 3))
    solver = REGISTRY[name].named(4, seed=7, progress=False, model=model)
    assert type(solver) is cls and solver.k == 4 and solver.kind == name
    if hasattr(solver, "seed"):  # (the exact solver has no randomness)
        assert solver.seed == 7
    if isinstance(solver, (NeuralEF, SpIN)):
        assert solver.model is model and solver.progress is False


def test_a_new_solver_registers_itself_by_its_kind():
    class Halved(ExactEigen):
        kind = "halved-test"

    try:
        assert REGISTRY["halved-test"] is Halved and isinstance(REGISTRY["halved-test"].named(2), EigenSolver)
    finally:
        del REGISTRY["halved-test"]
    assert set(names.SOLVERS) <= set(REGISTRY)
