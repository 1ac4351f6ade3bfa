"""ella: calibrated uncertainty for trained networks.

Empirical NTK -> NeuralEF eigenfunctions -> the k x k ELLA posterior -> calibrated predictions.
"""

from . import baselines, eigen, kernels, metrics, trajectory
from .ella import ELLA
from .metrics import evaluate

__version__ = "0.1.0"
__all__ = ["ELLA", "evaluate", "metrics", "kernels", "eigen", "baselines", "trajectory", "__version__"]
