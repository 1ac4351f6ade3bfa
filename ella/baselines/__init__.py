"""Baselines that ELLA is compared with: the MAP network and laplace-torch's linearised Laplace
approximations (all-weights KFAC and diagonal with ella's fast GLM predictive, last-layer full, and
laplace-torch's own ELLA), temperature scaling, the exact full-GGN LLA of small networks (the ground truth),
SWA and SWAG, plus the GLM predictive they share.

All methods follow ella's protocol::

    method = Cls(model, likelihood="classification", ...)
    method.fit(train_loader, val_loader=None)  # -> method
    method.predict(x)                          # (B, C) probabilities, or (mean, var) for regression
    method.predictive_moments(x)               # latent (mean (B, C), cov (B, C, C))
    method.name, method.model, method.likelihood, method.link
"""

from .diag_lla import DiagLLA
from .exact_lla import ExactLLA
from .glm import glm_moments
from .kfac_lla import KFACLLA
from .laplace_ella import LaplaceTorchELLA
from .last_layer_lla import LastLayerLLA
from .map import MAP
from .swag import SWA, SWAG
from .temperature import TemperatureScaling

__all__ = ["MAP", "TemperatureScaling", "KFACLLA", "DiagLLA", "LastLayerLLA", "LaplaceTorchELLA", "ExactLLA",
           "SWA", "SWAG", "glm_moments"]
