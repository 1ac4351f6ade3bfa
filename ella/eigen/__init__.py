"""Eigen-solvers for kernel integral operators (NeuralEF, SpIN: learned; Nystrom: exact on a subset), the
exact references they are checked against, and the diagnostics that compare them. Every solver keeps the
:class:`EigenSolver` contract."""

from .diagnostics import EigenComparison, compare
from .eigenmap import NeuralEigenmap
from .exact import ExactEigen, RBFGaussianEigen
from .nets import EigenfunctionNet, eigenfunction_net
from .neuralef import NeuralEF, neuralef_loss
from .nystrom import Nystrom
from .solver import REGISTRY, EigenSolver, RankError
from .spin import SpIN

__all__ = [
    "EigenSolver",
    "RankError",
    "REGISTRY",
    "NeuralEF",
    "NeuralEigenmap",
    "SpIN",
    "Nystrom",
    "ExactEigen",
    "RBFGaussianEigen",
    "compare",
    "EigenComparison",
    "EigenfunctionNet",
    "eigenfunction_net",
    "neuralef_loss",
]
