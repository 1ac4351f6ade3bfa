"""The file of a fitted linearised posterior: what it holds, its versions, and the checks on what is read back.

A posterior is an :mod:`ella.files` file (tensors and JSON metadata, checksummed, written atomically, never
pickled code) of format :data:`FORMAT`::

    meta     method (the class name), config (the constructor's arguments: likelihood, tuning, predictive, seed,
             the method's own), features (what the features need, the method's), fitted (the prior, the noise
             scale, the fold-in count, the search record, ...), model (parameter count, architecture, fingerprint)
    tensors  evals, evecs (the curvature's eigendecomposition), noise, search (scores and grids), features

Files of every earlier version are read: :func:`read` brings them to the current layout first.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import nn

from .. import batches, distributed, files
from ..checks import model_signature
from ..posterior import factor_basis
from ..utils import num_parameters
from .search import Choice
from .settings import Predictive, Tuning

FORMAT = "ella-posterior"
# 4: an ella.files file (tensors + JSON, checksummed); 5: ELLA's `residual` setting and choice; 6: any linearised
# method, its class and whole configuration, its search record (versions 4 and 5 are ELLA's); 7: the configuration's
# `tuning` and `predictive` apart (every earlier version still read)
FORMAT_VERSION = 7
TUNING_FIELDS = tuple(f.name for f in fields(Tuning))
PREDICTIVE_FIELDS = tuple(f.name for f in fields(Predictive))


def write(post, path) -> None:
    """Write the fitted linearised posterior ``post`` (not its model) to ``path``; of several processes, the first
    writes it, and every process waits until the file is whole."""
    feature_meta, feature_tensors = post._feature_state()
    choice = post.search_
    meta = {
        "method": type(post).__name__,
        "config": post._config(),
        "features": feature_meta,
        "fitted": {
            "prior_precision": post.prior_precision_,
            "noise_scale": post.noise_scale_,
            "num_folded": post.num_folded_,
            "num_train": post.num_train_,
            "fit_seconds": post.fit_seconds_,
            "stage_seconds": post.stage_seconds_,
            "input_spec": post.input_spec_,
            "isotropic": post.isotropic_,
            "search": None
            if choice is None
            else {
                "index": choice.index,
                "prior_precision": choice.prior_precision,
                "noise_scale": choice.noise_scale,
                "criterion": choice.criterion,
            },
            **post._fitted_meta(),
        },
        "model": {
            "num_params": num_parameters(post.model),
            "fingerprint": files.fingerprint(post.model),
            "architecture": files.architecture(post.model),
        },
    }
    tensors = {"evals": post.evals_, "evecs": post.evecs_, "features": feature_tensors}
    if post.noise_ is not None:
        tensors["noise"] = post.noise_
    if choice is not None:
        grids = (("prior_grid", choice.prior_grid), ("noise_grid", choice.noise_grid))
        tensors["search"] = {"scores": choice.scores, **{name: grid for name, grid in grids if grid is not None}}
    if distributed.is_main():  # every process holds the same posterior: one of them writes it
        files.write(path, FORMAT, FORMAT_VERSION, meta, tensors)
    distributed.barrier()  # the file is whole before any process goes on (and may read it)


def read(path, model: nn.Module, method: str) -> tuple[dict, dict]:
    """``(meta, tensors)`` of the posterior of class ``method`` in ``path``, in the current layout, after checking
    that ``model`` is the network it was fitted to (parameter count, modules, fingerprint)."""
    where = str(path)
    version, meta, tensors = files.read(path, FORMAT, FORMAT_VERSION, map_location=next(model.parameters()).device)
    if version <= 5:  # ELLA's own layout before version 6
        meta, tensors = _from_version_5(meta, tensors, where)
    if version <= 6:  # every setting flat before version 7
        meta = {**meta, "config": _nested(files.require(meta, "config", dict, where))}
    saved_model = files.require(meta, "model", dict, where)
    if saved_model.get("num_params") != num_parameters(model):
        raise ValueError(
            f"`model` has {num_parameters(model)} parameters but the posterior in {where} was "
            f"fitted to a model with {saved_model.get('num_params')}"
        )
    if saved_model.get("architecture", files.architecture(model)) != files.architecture(model):
        raise ValueError(
            f"`model` has other modules (or module settings) than the model the posterior in {where} was fitted to"
        )
    if saved_model.get("fingerprint") != files.fingerprint(model):
        raise ValueError(
            f"`model` has different weights or buffers from the model the posterior in {where} was fitted to"
        )
    if meta.get("method") != method:
        raise ValueError(
            f"{where} holds a posterior of {meta.get('method')!r}, not of {method}: load it with that class"
        )
    return meta, tensors


def settings(config: dict, where: str) -> dict:
    """``config`` with its ``tuning`` and ``predictive`` as the values (a ``ValueError`` naming the file for settings
    a constructor would refuse)."""
    try:
        return {
            **config,
            "tuning": Tuning(**files.require(config, "tuning", dict, where)),
            "predictive": Predictive(**files.require(config, "predictive", dict, where)),
        }
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} is malformed: its settings: {e}") from None


def restore(post, fitted: dict, tensors: dict, where: str) -> None:
    """Set the fitted state every linearised method has on the rebuilt ``post``, each value checked against the
    format."""
    D = post._num_features()
    post.evals_ = files.check_tensor(tensors.get("evals"), (D,), where, "evals", minimum=0.0)
    post.evecs_ = files.check_tensor(tensors.get("evecs"), (D, D), where, "evecs")
    noise = tensors.get("noise")
    if noise is None and post.likelihood == "classification":
        post.noise_ = None
    else:  # one value per output
        post.noise_ = files.check_tensor(noise, getattr(noise, "shape", (0,))[:1], where, "noise", minimum=1e-300)
    post.prior_precision_ = files.check_number(fitted.get("prior_precision"), where, "prior_precision")
    post.noise_scale_ = files.check_number(fitted.get("noise_scale"), where, "noise_scale")
    post.num_folded_, post.num_train_ = int(fitted["num_folded"]), int(fitted["num_train"])
    post.fit_seconds_ = files.check_number(fitted.get("fit_seconds"), where, "fit_seconds", positive=False)
    post.input_spec_ = batches.check_saved_spec(fitted.get("input_spec"), where)
    post.stage_seconds_ = fitted.get("stage_seconds")
    post.isotropic_ = fitted.get("isotropic", post.isotropic_choices[0])
    if post.isotropic_ not in post.isotropic_choices:
        raise ValueError(f"{where} is malformed: residual choice {post.isotropic_!r} unknown")
    search = fitted.get("search")
    post.search_ = (
        None
        if search is None
        else Choice(
            int(search["index"]),
            search["prior_precision"],
            search["noise_scale"],
            files.require(tensors.get("search", {}), "scores", torch.Tensor, where),
            tensors["search"].get("prior_grid"),
            tensors["search"].get("noise_grid"),
            str(search["criterion"]),
        )
    )
    post.basis_ = factor_basis(post.evals_.double(), post.evecs_.double(), post.prior_precision_, post.noise_scale_).to(
        post._dtype
    )
    post._signature = model_signature(post.model)


def _nested(config: dict) -> dict:
    """A version-6 configuration (every setting flat) in version 7's layout (``tuning`` and ``predictive`` apart)."""
    flat = dict(config)
    tuning = {name: flat.pop(name) for name in TUNING_FIELDS if name in flat}
    if flat.pop("posterior_update", True) is False:  # (the prior alone)
        tuning["fold_in"] = 0
    predictive = {name: flat.pop(name) for name in PREDICTIVE_FIELDS if name in flat}
    return {**flat, "tuning": tuning, "predictive": predictive}


def _from_version_5(meta: dict, tensors: dict, where: str) -> tuple[dict, dict]:
    """An ELLA file of version 4 or 5 (the kernel and solver beside the configuration; ``residual_samples``, 0 for
    none, before 5) in version 6's layout."""
    config = dict(files.require(meta, "config", dict, where))
    if "residual" not in config:
        config["residual"] = config.pop("residual_samples", 0) or "none"
    fitted = dict(files.require(meta, "fitted", dict, where))
    fitted.setdefault("isotropic", config["residual"])
    features = {"kernel": meta.get("kernel"), "solver": meta.get("solver")}
    feature_tensors = {"solver": tensors.get("solver")}
    if "trace_models" in tensors:
        feature_tensors["trace_models"] = tensors["trace_models"]
    return (
        {**meta, "method": "ELLA", "config": config, "fitted": fitted, "features": features},
        {**tensors, "features": feature_tensors},
    )
