"""The comparison driver: every method on the same MAP network, side by side, with shift, OOD, fidelity and cost.

For one :class:`~ella_lab.compare.problems.Problem` each method of the registry
(:mod:`ella_lab.compare.methods`) is built on the same trained network, fitted on the same training and
validation loaders, and then

* scored on the test set: accuracy, NLL, ECE / MCE (15 equal-width bins, top label), Brier (regression:
  Gaussian NLL with observation noise, RMSE);
* costed in this process, same thread count (:mod:`ella_lab.compare.cost`): fit seconds, predict seconds
  per 1,000 inputs (median of 3 timings on the first 2,000 test inputs, with the spread), peak memory of fit and
  predict, each also as a ratio to the MAP forward pass (for prediction, each timing paired with a forward pass);
* compared with exact LLA where it ran (:mod:`ella_lab.compare.fidelity`): NLL gap and predictive-variance
  error;
* run on shifted test sets (NLL / ECE / accuracy per level) and OOD sets (AUROC of the predictive entropy,
  mean max-probability).

A method that raises stops the comparison with :class:`MethodFailed` naming it; a method that does not
apply by design (:class:`~ella_lab.compare.methods.NotApplicable`) is recorded with its reason.
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch
from torch.utils.data import DataLoader

from ella.methods import evaluate, predict_all
from ella.metrics import mean_max_prob, ood_auroc
from ella.utils import num_parameters

from ..report import run_method
from .cost import measure, seconds_per_1000
from .fidelity import fidelity, latent_variances
from .methods import METHODS, NotApplicable, Settings, build, check_methods
from .problems import Problem

__all__ = ["MethodFailed", "compare_problem", "map_forward_cost"]

MB = 2**20


class MethodFailed(RuntimeError):
    """A method raised during a comparison; the message names the method and the problem."""

    def __init__(self, method: str, problem: str, error: BaseException):
        super().__init__(f"method {method!r} failed on {problem}: {type(error).__name__}: {error}")
        self.method, self.problem = method, problem


TIMING_POINTS = 2000  # test inputs that every prediction cost is timed on
REPEATS = 3  # timings per cost: the median is reported, with the spread


def map_forward_cost(
    model, x_test: torch.Tensor, x_train: torch.Tensor, batch_size: int = 1000, repeats: int = REPEATS
) -> dict:
    """The MAP forward pass, the unit of the fit and memory ratios: seconds per 1,000 of the first
    :data:`TIMING_POINTS` test inputs (median of ``repeats``, with ``seconds_per_1000_range``), seconds of one pass
    over the training inputs (best of ``repeats``), and peak memory of one batch. (Prediction ratios pair each timing
    with a forward pass of its own: :func:`predict_cost`.)"""
    device = next(model.parameters()).device

    @torch.no_grad()
    def forward(x):
        return model(x)

    def over(x):
        for i in range(0, len(x), batch_size):
            forward(x[i : i + batch_size].to(device))

    over(x_test[:8])  # warm-up
    per_1000 = seconds_per_1000(forward, x_test[:TIMING_POINTS].to(device), repeats, batch_size)
    train_pass = min(measure(over, x_train, device=device)[1] for _ in range(repeats))
    _, _, peak = measure(over, x_test[:batch_size], device=device)
    return {
        "seconds_per_1000": statistics.median(per_1000),
        "seconds_per_1000_range": [min(per_1000), max(per_1000)],
        "train_pass_seconds": train_pass,
        "peak_mb": None if peak is None else peak / MB,
    }


def _ratio(value, unit):
    return None if value is None or not unit else value / unit


def predict_cost(predict, x_test: torch.Tensor, model, repeats: int = REPEATS, piece: int = 1000) -> dict:
    """``predict``'s cost on the first :data:`TIMING_POINTS` test inputs: seconds per 1,000 (median of ``repeats``)
    and as a multiple of ``model``'s forward pass on the same inputs, each timing paired with one of the forward pass
    just before it (median ratio, with its spread), so that a machine whose speed drifts moves both alike. The
    forward pass runs in pieces of ``piece`` inputs: give the method's own ``batch_size``, the pieces its
    ``predict`` works in, so that both pay the same per-piece cost (pieces of other sizes run at other speeds)."""
    x = x_test[:TIMING_POINTS]

    @torch.no_grad()
    def forward(piece):
        return model(piece)

    times, ratios = [], []
    for _ in range(repeats):
        unit = seconds_per_1000(forward, x, 1, batch_size=min(piece, 1000))[0]
        times.append(seconds_per_1000(predict, x, 1)[0])
        ratios.append(times[-1] / unit)
    return {
        "predict_seconds_per_1000": statistics.median(times),
        "predict_vs_map": statistics.median(ratios),
        "predict_vs_map_range": [min(ratios), max(ratios)],
    }


def _run_method(
    method, problem: Problem, loaders, reference: dict, shift: dict, ood: dict, fidelity_x: torch.Tensor | None
) -> tuple[dict, dict]:
    """Fit, cost, score, shift and OOD for one method. Returns ``(row, extras)``."""
    device = next(problem.model.parameters()).device
    row, preds, targets = run_method(method, *loaders, timer=partial(measure, device=device))
    row.update(
        predict_cost(method.predict, problem.splits.test.tensors[0].to(device), problem.model, piece=method.batch_size)
    )
    row.update(
        fit_vs_map_forward=_ratio(row["fit_seconds"], reference["train_pass_seconds"]),
        fit_memory_vs_map=_ratio(row["fit_peak_mb"], reference["peak_mb"]),
        predict_memory_vs_map=_ratio(row["predict_peak_mb"], reference["peak_mb"]),
    )
    extras = {
        "preds": preds,
        "targets": targets,
        "shift": {},
        "ood": {},
        "variances": None if fidelity_x is None else latent_variances(method, fidelity_x),
    }
    for curve, levels in shift.items():
        points = []
        for level, dataset in levels:
            scores = evaluate(method, DataLoader(dataset, batch_size=1000))
            points.append({"level": level, **{k: scores[k] for k in ("acc", "nll", "ece") if k in scores}})
        extras["shift"][curve] = points
    if ood:
        max_prob = mean_max_prob(preds)
    for set_name, dataset in ood.items():
        probs = predict_all(method, DataLoader(dataset, batch_size=1000), f"ood {set_name}")[0]
        extras["ood"][set_name] = {
            "auroc": ood_auroc(preds, probs),
            "mean_max_prob": mean_max_prob(probs),
            "in_distribution_mean_max_prob": max_prob,
        }
    return row, extras


def compare_problem(
    problem: Problem,
    methods=None,
    settings: Settings | None = None,
    shift: dict | None = None,
    ood: dict | None = None,
    fidelity_points: int = 2000,
    batch_size: int = 256,
    progress: bool = False,
    log=print,
) -> tuple[dict, dict]:
    """Run every method on ``problem``.

    Args:
        problem: the trained network and its data.
        methods: method names (default: :data:`~ella_lab.compare.methods.METHODS`).
        settings: the methods' hyperparameters.
        shift: ``{curve: [(level, dataset), ...]}`` shifted test sets.
        ood: ``{name: dataset}`` out-of-distribution inputs (classification only).
        fidelity_points: test points on which predictive variances are compared with exact LLA.
        batch_size: training-loader batch size (test and validation: 1,000).
        progress: progress bars of the methods.
        log: where progress lines go.

    Returns:
        ``(section, artefacts)``: ``section`` is the JSON-ready result of this problem (``rows``,
        ``not_applicable``, ``fidelity``, ``shift``, ``ood``, ``map_forward``, ...); ``artefacts`` holds the
        predictions for the plots (``{"preds": {method: ...}, "targets": ...}``).

    Raises:
        ValueError: an unknown method name, before any work.
        MethodFailed: a method raised; the message names it.
    """
    settings = settings or Settings()
    names = list(METHODS if methods is None else methods)
    check_methods(names)
    shift, ood = shift or {}, ood or {}
    if ood and problem.likelihood == "regression":
        raise ValueError("`ood` sets apply to classification problems only")
    loaders = problem.loaders(batch_size)
    x_train, x_test = problem.splits.train.tensors[0], problem.splits.test.tensors[0]
    reference = map_forward_cost(problem.model, x_test, x_train)
    P = num_parameters(problem.model)
    exact = "exact_lla" in names and P <= settings.exact_max_params and fidelity_points > 0  # variances where compared
    fidelity_x = x_test[:fidelity_points] if exact else None
    rows, not_applicable, variances = {}, {}, {}
    section = {
        "dataset": problem.dataset,
        "model": problem.model_name,
        "likelihood": problem.likelihood,
        "num_params": P,
        "num_train": len(problem.splits.train),
        "num_val": len(problem.splits.val),
        "num_test": len(problem.splits.test),
        "map_training": {"seconds": problem.train_seconds, "recipe": problem.recipe},
        "map_forward": reference,
        "fidelity_points": 0 if fidelity_x is None else len(fidelity_x),
        "shift": {},
        "ood": {},
    }
    artefacts = {"preds": {}, "targets": None}
    for name in names:
        start = time.perf_counter()
        try:
            method = build(name, problem, settings, progress)
        except NotApplicable as reason:
            not_applicable[name] = str(reason)
            log(f"[{problem.key}] {name}: not applicable ({reason})")
            continue
        except Exception as e:  # noqa: BLE001 - re-raised with the method's name
            raise MethodFailed(name, problem.key, e) from e
        log(f"[{problem.key}] {name}")
        try:
            row, extras = _run_method(method, problem, loaders, reference, shift, ood, fidelity_x)
        except Exception as e:  # noqa: BLE001 - re-raised with the method's name
            raise MethodFailed(name, problem.key, e) from e
        rows[name], variances[name] = row, extras["variances"]
        artefacts["preds"][name], artefacts["targets"] = extras["preds"], extras["targets"]
        for curve, points in extras["shift"].items():
            section["shift"].setdefault(curve, {})[name] = points
        for set_name, scores in extras["ood"].items():
            section["ood"].setdefault(set_name, {})[name] = scores
        log(
            f"[{problem.key}] {name}: nll {row['nll']:.4f}, fit {row['fit_seconds']:.1f} s, "
            f"predict {row['predict_seconds_per_1000']:.3f} s / 1000 ({time.perf_counter() - start:.0f} s in all)"
        )
    section.update(rows=rows, not_applicable=not_applicable, fidelity=fidelity(rows, variances))
    return section, artefacts
