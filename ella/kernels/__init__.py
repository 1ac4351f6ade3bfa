"""Kernels behind one interface: Gram blocks ``(B C, B C)`` and/or features ``(B, C, S)``."""

from .augmentation import AugmentationKernel
from .base import FeatureKernel, Kernel
from .classic import RBF, Polynomial
from .custom import UserKernel
from .graph import GraphKernel
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
    "GraphKernel",
    "AugmentationKernel",
]
