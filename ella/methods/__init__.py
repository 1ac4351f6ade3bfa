"""Methods: ELLA and every baseline it is compared with, all keeping the :class:`Method` protocol
(``fit(train_loader, val_loader)``, ``predict(x)``, ``predictive_moments(x)`` where the predictive is Gaussian,
``name``, ``fit_seconds_``), and :func:`evaluate` to score them.

==========================  ===============================================================================
method                      what it is
==========================  ===============================================================================
:class:`ELLA`               linearised Laplace in the span of k learned kernel eigenfunctions
:class:`ExactLLA`           linearised Laplace with the full GGN over all weights (small networks)
:class:`KFACLLA`            laplace-torch's Kronecker-factored all-weights LLA, ella's predictive
:class:`DiagLLA`            laplace-torch's diagonal all-weights LLA, ella's predictive
:class:`LastLayerLLA`       laplace-torch's last-layer LLA with the full last-layer GGN
:class:`LastLayerKFAC`      laplace-torch's default: last-layer LLA with a KFAC GGN, ella's predictive
:class:`LaplaceTorchELLA`   laplace-torch's Nystrom ELLA feature map, ella's posterior
:class:`NativeLaplaceELLA`  laplace-torch's own ELLA: its fit, prior grid and predictive
:class:`NativeVaLLA`        laplace-torch's own VaLLA (variational linearised Laplace)
:class:`MAP`                the network itself
:class:`TemperatureScaling` one scalar on validation NLL
:class:`SWA`, :class:`SWAG` from a recorded SGD trajectory
==========================  ===============================================================================
"""

from .base import GaussianMethod, Method
from .diag_lla import DiagLLA
from .ella import ELLA
from .evaluate import evaluate, predict_all
from .exact_lla import ExactLLA
from .kfac_lla import KFACLLA, LastLayerKFAC
from .laplace_ella import LaplaceTorchELLA
from .laplace_native import NativeLaplaceELLA, NativeVaLLA
from .last_layer_lla import LastLayerLLA
from .map import MAP
from .settings import Predictive, Tuning
from .swag import SWA, SWAG, swa_model, update_bn
from .temperature import TemperatureScaling

__all__ = [
    "Method",
    "GaussianMethod",
    "ELLA",
    "Tuning",
    "Predictive",
    "ExactLLA",
    "KFACLLA",
    "DiagLLA",
    "LastLayerLLA",
    "LastLayerKFAC",
    "LaplaceTorchELLA",
    "NativeLaplaceELLA",
    "NativeVaLLA",
    "MAP",
    "TemperatureScaling",
    "SWA",
    "SWAG",
    "swa_model",
    "update_bn",
    "evaluate",
    "predict_all",
]
