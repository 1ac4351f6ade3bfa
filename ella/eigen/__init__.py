"""Eigen-solvers for kernel integral operators: NeuralEF (learned) and Nystrom (exact on a subset)."""

from .nets import EigenfunctionNet, L2BatchNorm, eigenfunction_net
from .neuralef import NeuralEF, neuralef_loss
from .nystrom import Nystrom
from .solver import EigenSolver

__all__ = ["EigenSolver", "NeuralEF", "Nystrom", "EigenfunctionNet", "L2BatchNorm", "eigenfunction_net",
           "neuralef_loss"]
