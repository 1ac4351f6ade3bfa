"""Baselines that ELLA is compared with: the MAP network and laplace-torch's linearised Laplace
approximations (all-weights KFAC with ella's fast GLM predictive, and last-layer full), plus the GLM
predictive they share.

All methods follow ella's protocol::

    method = Cls(model, likelihood="classification", ...)
    method.fit(train_loader, val_loader=None)  # -> method
    method.predict(x)                          # (B, C) probabilities, or (mean, var) for regression
    method.predictive_moments(x)               # latent (mean (B, C), cov (B, C, C))
    method.name, method.model, method.likelihood, method.link
"""

from .glm import glm_moments
from .laplace_torch import KFACLLA, LastLayerLLA
from .map import MAP
from .swag import SWA, SWAG

__all__ = ["MAP", "KFACLLA", "LastLayerLLA", "SWA", "SWAG", "glm_moments"]
