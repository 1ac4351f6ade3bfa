"""``ella demo``: the whole job on MNIST-1D, generated locally, with nothing to download.

Two MAP networks (a CNN with weight decay, and an MLP trained without it, which overfits), and for each:
MAP, laplace-torch's KFAC-LLA (all weights) and last-layer LLA, ``ELLA(model)`` with its defaults and ELLA with
Nystrom features, and, from one recorded SGD trajectory continuing the MAP training, SWA, SWAG and ELLA with the
SGD-trajectory kernel; all scored on the same 10,000 generated test points.
"""

from __future__ import annotations

import importlib.util
import time

import torch
from torch.utils.data import DataLoader

from ella.eigen import Nystrom
from ella.methods import ELLA, KFACLLA, MAP, LastLayerLLA

from .compare.driver import predict_cost
from .compare.methods import Settings
from .data import mnist1d
from .report import environment, markdown_table, run_method, write_report
from .train import train_mnist1d_cnn, train_mnist1d_mlp
from .trajectory import trajectory_methods

TRAINERS = {"cnn": train_mnist1d_cnn, "mlp": train_mnist1d_mlp}


def demo_settings(quick: bool) -> dict:
    """Sizes of the full and the ``--quick`` demo (test points, the SGD-trajectory ELLA's NeuralEF steps, Nystrom's
    points, laplace-torch's timing points); the ``ella`` row is ``ELLA(model)`` with the library's defaults in
    both."""
    if quick:
        return dict(num_test=2000, neuralef_steps=600, nystrom_points=500, laplace_torch_points=20)
    return dict(
        num_test=10000,
        neuralef_steps=Settings.neuralef_steps,
        nystrom_points=Settings.nystrom_points,
        laplace_torch_points=100,
    )


def methods_for(model, settings: dict, seed: int, progress: bool) -> dict:
    """The compared methods, built on one MAP model (each method is fitted by ``run_method``)."""
    ella_opts = dict(seed=seed, progress=progress)
    methods = {"map": MAP(model)}
    if has_laplace_torch():
        methods["kfac_lla"] = KFACLLA(model, "classification", prior="marglik", link="margin", progress=progress)
        methods["last_layer_lla"] = LastLayerLLA(
            model, "classification", prior="marglik", link="margin", progress=progress
        )
    methods["ella"] = ELLA(model, **ella_opts)  # the defaults, nothing else
    methods["ella_nystrom"] = ELLA(model, solver=Nystrom(20, settings["nystrom_points"], seed=seed), **ella_opts)
    return methods


def has_laplace_torch() -> bool:
    """Whether laplace-torch (the ``laplace`` extra), which the KFAC-LLA and last-layer LLA rows need, is installed."""
    return importlib.util.find_spec("laplace") is not None


def laplace_torch_predict_seconds(method: KFACLLA, x: torch.Tensor) -> float:
    """laplace-torch's own GLM predictive time per 1,000 inputs, measured on ``x``."""
    start = time.perf_counter()
    method.laplace_predict(x)
    return (time.perf_counter() - start) * 1000 / len(x)


def run_demo(
    out: str = "ella-demo",
    quick: bool = False,
    seed: int = 0,
    models=("cnn", "mlp"),
    progress: bool = True,
    log=print,
    **sizes,
) -> dict:
    """Train the MAP models, fit every method, print one table per model and write the report to ``out``.

    ``sizes`` override entries of :func:`demo_settings` (``num_test``, ``neuralef_steps``, ...)."""
    settings = demo_settings(quick)
    unknown = set(sizes) - set(settings)
    if unknown:
        raise ValueError(f"unknown demo settings {sorted(unknown)}; known: {sorted(settings)}")
    settings.update(sizes)
    start = time.perf_counter()
    data = mnist1d(num_test=settings["num_test"])
    train = DataLoader(data.train, batch_size=256)
    val = DataLoader(data.val, batch_size=500)
    test = DataLoader(data.test, batch_size=1000)
    report = {
        "dataset": "mnist1d",
        "quick": quick,
        "seed": seed,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "num_test": len(data.test),
        "settings": settings,
        "environment": environment(),
        "models": {},
        "map_training": {},
    }
    diagrams = {}
    if not has_laplace_torch():
        log(
            "laplace-torch is not installed: the kfac_lla and last_layer_lla rows are left out "
            "(pip install 'ella[laplace]')"
        )
    for name in models:
        log(f"[{name}] training the MAP network")
        model, history = TRAINERS[name](data, seed=seed, progress=progress)
        report["map_training"][name] = {"seconds": history["seconds"], "recipe": history["recipe"]}
        rows, diagrams[name] = {}, {}
        methods = methods_for(model, settings, seed, progress)
        methods.update(
            trajectory_methods(
                data, model, history["recipe"], seed=seed, progress=progress, neuralef_steps=settings["neuralef_steps"]
            )
        )
        for method_name, method in methods.items():
            log(f"[{name}] {method_name}")
            row, probs, labels = run_method(method, train, val, test, progress)
            row.update(predict_cost(method.predict, data.test.tensors[0], model, piece=method.batch_size))
            if method_name == "kfac_lla":
                row["laplace_torch_predict_seconds_per_1000"] = laplace_torch_predict_seconds(
                    method, data.test.tensors[0][: settings["laplace_torch_points"]]
                )
            rows[method_name], diagrams[name][method_name] = row, (probs, labels)
        report["models"][name] = rows
        log(f"\nMNIST-1D {name} ({len(data.test)} test points; ECE: 15 equal-width bins, top label)")
        log(markdown_table(rows) + "\n")
    report["seconds"] = time.perf_counter() - start
    write_report(report, out, diagrams, title="ella demo: MNIST-1D")
    log(f"report written to {out}/ (report.json, report.md, reliability_*.png)")
    return report
