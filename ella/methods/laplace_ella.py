"""laplace-torch's own ELLA feature map (``laplace.ELLA``: a Nystrom basis), with ella's posterior machinery.

What laplace-torch does: ``M = subsample_size`` training inputs, each with one output index drawn at random,
give Jacobian rows ``J_M`` (``M x P``); the top ``k`` eigenpairs ``(p_j, q_j)`` of ``J_M J_M^T`` give parameter
directions ``V = J_M^T q / sqrt(p)``; the features are ``Psi(x) = J(x) V``; and ``G = sum_i Psi_i^T Lambda_i
Psi_i + delta I_k`` is accumulated over the whole training loader. This method lets laplace-torch fit all of that,
then treats its features like every other :class:`~ella.methods.linearised.LinearisedLaplace`: the prior (and
noise) by the one search, predictions with ella's links. So it compares laplace-torch's ELLA feature map with
ella's, everything else equal. The features are ella's forward-mode products along laplace-torch's directions
(:func:`~ella.functional.jvps` with ``V``, ``P x k``: the whole fitted feature map), which is what a saved posterior
holds.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import batches, files
from ..checks import check_positive_int
from ..functional import jvps
from ..utils import num_parameters, require
from .laplace_torch import _as_dataloader
from .linearised import LinearisedLaplace
from .settings import Predictive, Tuning
from .survey import Survey


class LaplaceTorchELLA(LinearisedLaplace):
    """laplace-torch's ``ELLA`` feature map (Nystrom) inside ella's linearised Laplace.

    Args:
        model: the trained network (eval mode) with outputs ``(B, C)``.
        likelihood: ``"classification"`` or ``"regression"``.
        k: ``n_eigenvalues``, the number of Nystrom directions.
        subsample_size: ``M``, training inputs behind the Nystrom basis (capped at the training set size;
            2000 as in the ELLA paper).

    ``tuning``, ``predictive``, ``seed`` and ``progress`` are as for
    :class:`~ella.methods.linearised.LinearisedLaplace`; ``seed`` is also laplace-torch's.

    Fitted: besides the base class's, ``directions_`` (laplace-torch's ``V``, ``P x k``) and ``la_`` (the fitted
    ``laplace.ELLA``; ``None`` in a loaded posterior, whose features need only ``directions_``).
    """

    la_ = None

    name = "laplace_torch_ella"

    def __init__(
        self,
        model: nn.Module,
        likelihood: str = "classification",
        k: int = 20,
        *,
        subsample_size: int = 2000,
        tuning: Tuning | None = None,
        predictive: Predictive | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        super().__init__(model, likelihood, tuning=tuning, predictive=predictive, seed=seed, progress=progress)
        require("laplace", "laplace-torch", "laplace", type(self).__name__)
        self.k = check_positive_int(k, "k")
        self.subsample_size = check_positive_int(subsample_size, "subsample_size")
        if self.k > self.subsample_size:
            raise ValueError(f"`k` = {k} must be at most `subsample_size` = {subsample_size}")

    def _num_features(self) -> int:
        return self.k

    def _prepare(self, data: Survey, train_loader) -> None:
        from laplace import ELLA as LaplaceELLA

        la = LaplaceELLA(
            self.model,
            self.likelihood,
            subsample_size=min(self.subsample_size, data.num_train),
            n_eigenvalues=self.k,
            seed=self.seed,
        )
        la.fit(_as_dataloader(train_loader, "train_loader"), progress_bar=self.progress)
        self.la_, self.directions_ = la, la.dual_directions.detach()

    def _accumulate(self, loader, n: int, counts: list[int], rho, need_evidence: bool) -> dict:
        """laplace-torch's own ``G - delta I`` (its ``feature_gram``, accumulated in its fit) where it is the same
        curvature; a pass of ella's otherwise (fold-in candidates, the evidence, several noise scales)."""
        same = not need_evidence and counts == [n] and (rho is None or len(rho) == 1)
        if not same:
            return super()._accumulate(loader, n, counts, rho, need_evidence)
        curv = self.la_.feature_gram.double().cpu() / float(self.la_.temperature)
        if rho is not None:  # laplace-torch's regression gram is at unit noise
            curv = curv / float(rho[0]) ** 2
        zeros = torch.zeros(1, dtype=torch.float64)
        return {"curvature": curv[None], "c": zeros, "n": zeros}

    def _features(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        # Psi(x) = J(x) V by one forward-mode product per direction; g(x) by a forward pass
        with torch.enable_grad():
            phi = jvps(self.model, x, self.directions_.T)
        return batches.call(self.model, x), phi

    # ---------------------------------------------------------------- persistence
    def _config(self) -> dict:
        return {**super()._config(), "k": self.k, "subsample_size": self.subsample_size}

    def _feature_state(self) -> tuple[dict, dict]:
        return {}, {"directions": self.directions_}

    @classmethod
    def _rebuild(cls, model, config: dict, meta: dict, tensors: dict, where: str, **given) -> "LaplaceTorchELLA":
        post = super()._rebuild(model, config, meta, tensors, where, **given)
        shape = (num_parameters(model), post.k)
        post.directions_ = files.check_tensor(tensors.get("directions"), shape, where, "features/directions")
        return post

    def __repr__(self) -> str:
        return f"LaplaceTorchELLA(likelihood={self.likelihood!r}, k={self.k}, M={self.subsample_size})"
