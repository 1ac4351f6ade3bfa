"""``ella compare`` and the benchmark: build each problem, its shift and OOD sets, run every method, write.

    results = compare("mnist1d", "cnn", out="compare-mnist1d")        # one problem
    results = run_benchmark([("mnist1d", "cnn"), ("digits", "mlp")], out="benchmarks/results")

Shift and OOD sets per data set (:mod:`ella_lab.compare.shift`): MNIST-1D gets the i.i.d.-noise, translation
and shear curves and the shuffled-sequence and pure-noise OOD sets; digits gets rotations; grey image data sets
(Fashion-MNIST, MNIST, KMNIST) get rotations and the scaled-up-digits and uniform-noise OOD sets; the toy
regression's test grid itself covers the in-between gap and both sides beyond the data.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..data.images import IMAGE_DATASETS, DataUnavailable
from ..report import environment
from .driver import compare_problem
from .methods import Settings, check_methods
from .problems import Problem, make_problem, network_name
from .report import assemble, write_results
from .shift import digits_rotation_sets, image_ood_sets, image_rotation_sets, mnist1d_ood_sets, mnist1d_shift_sets

__all__ = ["compare", "run_benchmark", "shift_and_ood_sets", "ALL_PROBLEMS"]

ALL_PROBLEMS = (("mnist1d", "cnn"), ("mnist1d", "mlp"), ("digits", "mlp"), ("toy", "mlp"))
# per-data-set changes to the settings: the toy NTK (100 inputs in 1-D, a smooth kernel) has numerical rank
# about 17, so k = 20 directions do not exist there
PROBLEM_SETTINGS = {"toy": {"k": 10}}


def shift_and_ood_sets(problem: Problem, shift_points: int = 1000, ood_points: int = 2000) -> tuple[dict, dict]:
    """``(shift, ood)`` for ``problem``: ``{curve: [(level, dataset), ...]}`` and ``{name: dataset}``."""
    if problem.dataset == "mnist1d":
        return mnist1d_shift_sets(num_test=shift_points), mnist1d_ood_sets(ood_points)
    if problem.dataset == "digits":
        return {"rotation": digits_rotation_sets(problem.splits)}, {}
    if problem.splits.input_shape[0] == 1 and problem.dataset in IMAGE_DATASETS:  # grey images
        return (
            {"rotation": image_rotation_sets(problem.splits, num=shift_points)},
            image_ood_sets(problem.splits, ood_points),
        )
    return {}, {}


def run_benchmark(
    problems=ALL_PROBLEMS,
    out=None,
    methods=None,
    settings: Settings | None = None,
    seed: int = 0,
    num_test: int = 10000,
    shift_points: int = 1000,
    ood_points: int = 2000,
    fidelity_points: int = 2000,
    data_root=None,
    threads: int | None = 1,
    progress: bool = True,
    log=print,
) -> dict:
    """Run every method on every ``(dataset, model)`` problem; write the results to ``out`` if given.

    Args:
        problems: ``(dataset, model)`` pairs (model ``None``: the data set's first network).
        out: output folder (``results.json``, ``results.md``, figures); ``None`` writes nothing.
        methods: method names (default: every available registered method).
        settings: hyperparameters of the methods (:class:`ella_lab.compare.methods.Settings`).
        seed: seed of the MAP networks and of every method.
        num_test: MNIST-1D and torchvision test points.
        shift_points, ood_points: points per shift level and per OOD set (MNIST-1D).
        fidelity_points: test points on which variances are compared with exact LLA.
        data_root: folder of torchvision files.
        threads: torch CPU threads for the whole run (restored afterwards); ``None`` leaves them.
        progress: progress bars; log: where progress lines go.

    Returns:
        The results document (see :mod:`ella_lab.compare.report`); torchvision data sets whose files are
        missing are listed under ``skipped`` with the reason.

    Raises:
        ella_lab.compare.driver.MethodFailed: a method raised (the message names it).
    """
    problems = [(d, m) for d, m in problems]
    for dataset, model in problems:  # every argument checked before any network trains
        network_name(dataset, model)
    check_methods(methods or ())
    settings = settings or Settings()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sections, artefacts, splits, skipped = {}, {}, {}, {}
    try:
        env = environment()  # with the run's thread count
        for dataset, model in problems:
            try:
                problem = make_problem(
                    dataset, model, seed=seed, num_test=num_test, data_root=data_root, progress=progress
                )
            except DataUnavailable as e:
                skipped[f"{dataset}_{network_name(dataset, model)}"] = str(e)
                log(f"[{dataset}] skipped: {e}")
                continue
            log(f"[{problem.key}] MAP trained in {problem.train_seconds:.0f} s")
            shift, ood = shift_and_ood_sets(problem, shift_points, ood_points)
            own = replace(settings, **PROBLEM_SETTINGS.get(dataset, {}))
            sections[problem.key], artefacts[problem.key] = compare_problem(
                problem, methods, own, shift, ood, fidelity_points, progress=progress, log=log
            )
            sections[problem.key]["settings"] = own.to_dict()
            splits[problem.key] = problem.splits
    finally:
        torch.set_num_threads(before)
    results = assemble(
        sections,
        settings.to_dict(),
        env,
        seed=seed,
        skipped=skipped,
        sizes={
            "num_test": num_test,
            "shift_points": shift_points,
            "ood_points": ood_points,
            "fidelity_points": fidelity_points,
        },
    )
    if out is not None:
        write_results(results, out, artefacts, splits)
    return results


def compare(dataset: str, model: str | None = None, out=None, **kwargs) -> dict:
    """Every method on one problem; see :func:`run_benchmark` for the options."""
    return run_benchmark([(dataset, model)], out=out, **kwargs)
