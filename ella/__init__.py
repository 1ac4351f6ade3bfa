"""ella: calibrated uncertainty for trained networks.

Empirical NTK -> NeuralEF eigenfunctions -> the k x k ELLA posterior -> calibrated predictions.

``ella.ELLA``, its settings ``ella.Tuning`` and ``ella.Predictive``, and ``ella.evaluate`` are imported on first
use, so that ``import ella.kernels`` (or the ``ella`` command's ``--help``) loads only what it needs.
"""

__version__ = "0.1.0"
__all__ = ["ELLA", "Tuning", "Predictive", "evaluate", "__version__"]


def __getattr__(name: str):
    if name == "ELLA":
        from .methods.ella import ELLA

        return ELLA
    if name in ("Tuning", "Predictive"):
        from .methods import settings

        return getattr(settings, name)
    if name == "evaluate":
        from .methods.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'ella' has no attribute {name!r}")
