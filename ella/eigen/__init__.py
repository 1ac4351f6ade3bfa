"""Eigen-solvers for kernel integral operators (NeuralEF, SpIN: learned; Nystrom: exact on a subset), the
exact references they are checked against, and the diagnostics that compare them."""

from .diagnostics import EigenComparison, compare
from .exact import ExactEigen, RBFGaussianEigen
from .nets import EigenfunctionNet, L2BatchNorm, eigenfunction_net, mlp_body
from .neuralef import NeuralEF, neuralef_loss
from .nystrom import Nystrom
from .solver import EigenSolver
from .spin import SpIN

__all__ = ["EigenSolver", "NeuralEF", "SpIN", "Nystrom", "ExactEigen", "RBFGaussianEigen", "compare",
           "EigenComparison", "EigenfunctionNet", "L2BatchNorm", "eigenfunction_net", "mlp_body",
           "neuralef_loss"]
