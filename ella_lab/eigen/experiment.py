"""``ella eigen``: fit one eigen-solver to a problem with a known answer, compare, print, plot.

All the logic of the command lives here (:func:`run_eigen_experiment`); ``ella_lab.cli`` only parses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ella.checks import check_positive_int
from ella.eigen import EigenSolver, NeuralEF, Nystrom, SpIN, compare
from ella.eigen.nets import EigenfunctionNet, mlp_body

from . import SOLVERS
from .problems import EigenProblem, make_problem


def seeded_net(in_features: int, num_outputs: int, k: int, width: int, seed: int = 0) -> EigenfunctionNet:
    """A 2-hidden-layer SiLU MLP eigenfunction network of ``width``, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EigenfunctionNet(mlp_body(in_features, num_outputs * k, width=width), num_outputs, k)


def default_net(problem: EigenProblem, k: int, seed: int = 0) -> EigenfunctionNet:
    """:func:`seeded_net` of width 64 for 1-D/2-D inputs, else 256."""
    D = problem.x_train[0].numel()
    return seeded_net(D, problem.num_outputs, k, 64 if D <= 2 else 256, seed).to(problem.x_train.dtype)


def make_solver(
    name: str,
    problem: EigenProblem,
    k: int,
    steps: int = 3000,
    seed: int = 0,
    num_points: int | None = None,
    progress: bool = False,
) -> EigenSolver:
    """A solver with the defaults used by ``ella eigen``.

    NeuralEF and SpIN train the same network (:func:`default_net`). Problems with at most 4,000 rows
    ``(x, c)`` get full batches (SpIN then without moving averages, ``momentum=0``): minibatch noise is what
    keeps both from converging on the tails of these spectra. Scalar kernels (``C = 1``, the steep spectra of
    RBF / polynomial / NNGP kernels on toy data) train NeuralEF with ``balanced=True`` and lr 1e-2, others
    with the plain objective and lr 3e-3. Nystrom uses ``num_points`` rows (default: half the inputs).
    """
    if name not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {name!r}")
    N, C = len(problem.x_train), problem.num_outputs
    if name == "nystrom":
        return Nystrom(k, num_points=num_points or max(k, N // 2), seed=seed)
    full = N * C <= 4000
    batch = N if full else 128
    balanced = full and C == 1
    lr = 1e-2 if balanced else 3e-3
    net = default_net(problem, k, seed)
    if name == "neuralef":
        return NeuralEF(
            k, net=net, steps=steps, batch_size=batch, lr=lr, seed=seed, progress=progress, balanced=balanced
        )
    return SpIN(
        k, net=net, steps=steps, batch_size=batch, lr=lr, momentum=0.0 if full else 0.9, seed=seed, progress=progress
    )


def time_fit(solver: EigenSolver, kernel, x: torch.Tensor) -> float:
    """Fit ``solver`` on the inputs ``x`` (empirical measure); returns seconds."""
    start = time.perf_counter()
    solver.fit(kernel, x)
    return time.perf_counter() - start


@torch.no_grad()
def eval_seconds_per_1000(solver: EigenSolver, x: torch.Tensor, repeats: int = 3) -> float:
    """Best-of-``repeats`` time to evaluate ``psi`` on ``x``, per 1,000 inputs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        solver(x)
        best = min(best, time.perf_counter() - start)
    return best * 1000 / len(x)


def run_eigen_experiment(
    kernel: str = "rbf",
    solver: str = "neuralef",
    data: str | None = None,
    k: int = 5,
    steps: int = 3000,
    num_points: int | None = None,
    num_train: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    num_threads: int | None = 1,
    progress: bool = True,
) -> dict:
    """Build the problem, fit the solver, compare with the exact answer, print the table, write plots.

    Args:
        kernel: ``"rbf"``, ``"polynomial"``, ``"nngp"`` or ``"ntk"``.
        solver: ``"neuralef"``, ``"spin"`` or ``"nystrom"``.
        data: ``"gaussian-1d"``, ``"moons"``, ``"circles"`` or ``"mnist1d"``; default per kernel.
        k: number of eigenpairs.
        steps: training steps of NeuralEF / SpIN.
        num_points: Nystrom's ``M``.
        num_train: training inputs (default per data set).
        out: folder for ``eigen_<kernel>_<solver>.json`` and the two figures; ``None`` writes nothing.
        seed: seed of the data, the kernel's randomness and the solver.
        num_threads: torch's CPU threads during the run (restored afterwards); ``None`` keeps the current
            setting. One thread is the fastest for these small problems, above all on a shared machine.
        progress: show progress bars.

    Returns:
        A JSON-ready dict: the problem, the solver's settings, the comparison, timings and written files.
    """
    check_positive_int(k, "k")
    check_positive_int(steps, "steps")
    if solver not in SOLVERS:  # before the (possibly long) problem construction
        raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}")
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_positive_int(num_threads, "num_threads"))
    try:
        return _run(kernel, solver, data, k, steps, num_points, num_train, out, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _run(kernel, solver, data, k, steps, num_points, num_train, out, seed, progress) -> dict:
    problem = make_problem(kernel, data, k, num_train=num_train, seed=seed, progress=progress)
    fitted = make_solver(solver, problem, k, steps, seed, num_points, progress=progress)
    fit_s = time_fit(fitted, problem.kernel, problem.x_train)
    result = compare(fitted, problem.exact, problem.x_test)
    title = f"{problem.name}: {type(fitted).__name__}, k = {k}"
    print(result.table(title))
    eval_s = eval_seconds_per_1000(fitted, problem.x_test)
    print(f"fit {fit_s:.2f} s; evaluating psi: {eval_s:.4f} s per 1,000 held-out points")
    report = {
        "problem": problem.name,
        "solver": solver,
        "k": k,
        "seed": seed,
        "steps": steps,
        "num_train": len(problem.x_train),
        "num_outputs": problem.num_outputs,
        "fit_seconds": fit_s,
        "test_seconds_per_1000": eval_s,
        "comparison": result.to_dict(),
        "files": [],
    }
    if out is not None:
        from .plots import plot_eigenfunctions, plot_spectrum

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"eigen_{kernel}_{solver}"
        plot_spectrum(fitted, problem.exact, out / f"{stem}_spectrum.png", title)
        plot_eigenfunctions(
            fitted, problem.exact, problem.x_train, problem.x_test, out / f"{stem}_functions.png", k, title
        )
        report["files"] = [str(out / f"{stem}_{s}") for s in ("spectrum.png", "functions.png")]
        report["files"].append(str(out / f"{stem}.json"))
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
        print("wrote " + ", ".join(report["files"]))
    return report
