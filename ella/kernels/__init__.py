"""Kernels behind one interface: Gram blocks ``(B C, B C)`` and/or features ``(B, C, S)``."""

from .base import FeatureKernel, Kernel
from .classic import RBF, Polynomial
from .custom import UserKernel
from .nngp import NNGPKernel
from .ntk import EmpiricalNTK
from .sgd_trajectory import SGDTrajectoryKernel

__all__ = [
    "Kernel",
    "FeatureKernel",
    "EmpiricalNTK",
    "NNGPKernel",
    "RBF",
    "Polynomial",
    "UserKernel",
    "SGDTrajectoryKernel",
]
