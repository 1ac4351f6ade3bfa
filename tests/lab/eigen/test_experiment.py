import json

import pytest
import torch

from ella_lab.cli import main
from ella_lab.eigen.experiment import make_solver, run_eigen_experiment
from ella_lab.eigen.problems import gaussian_quantiles, load_data, make_problem

from tests.conftest import is_png


def test_cli_fits_compares_and_writes_plots(tmp_path, capsys):
    main(
        [
            "eigen",
            "--kernel",
            "polynomial",
            "--data",
            "moons",
            "--solver",
            "nystrom",
            "--k",
            "4",
            "--num-train",
            "120",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "rel. error" in out and "orthogonality" in out and "reconstruction" in out
    report = json.loads((tmp_path / "eigen_polynomial_nystrom.json").read_text())
    assert report["problem"] == "polynomial/moons" and len(report["comparison"]["cosine"]) == 4
    for name in ("spectrum", "functions"):
        assert is_png(tmp_path / f"eigen_polynomial_nystrom_{name}.png")


@pytest.mark.parametrize(
    "kernel, data, solver",
    [("rbf", "gaussian-1d", "neuralef"), ("nngp", "circles", "spin"), ("ntk", "gaussian-1d", "nystrom")],
)
def test_library_runs_every_kernel_and_solver(tmp_path, kernel, data, solver):
    report = run_eigen_experiment(kernel, solver, data, k=3, steps=20, num_train=60, out=tmp_path, progress=False)
    assert report["num_train"] == 60 and report["solver"] == solver and report["k"] == 3
    assert all(torch.isfinite(torch.tensor(report["comparison"]["eigenvalues"])))
    assert len(report["files"]) == 3


def test_problems_have_consistent_exact_answers():
    problem = make_problem("polynomial", "circles", k=3, num_train=50)
    assert problem.exact.eigenvalues.shape[0] >= 3 and problem.x_train.shape == (50, 2)
    assert problem.exact(problem.x_train).shape == (50, 1, problem.exact.k)
    x, y, x_test = load_data("moons", 30, 20)
    assert x.shape == (30, 2) and y.shape == (30,) and x_test.shape == (20, 2)
    q = gaussian_quantiles(4)
    assert torch.allclose(q.flatten(), -q.flatten().flip(0)) and q.shape == (4, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`kernel`"):
        make_problem("laplace")
    with pytest.raises(ValueError, match="`data`"):
        make_problem("rbf", "spirals")
    with pytest.raises(ValueError, match="`solver`"):
        run_eigen_experiment("rbf", "lanczos")
    with pytest.raises(ValueError, match="`k`"):
        make_problem("rbf", k=600)
    with pytest.raises(ValueError, match="`solver`"):
        make_solver("power", make_problem("rbf", k=2, num_train=20), 2)
    with pytest.raises(SystemExit):
        main(["eigen", "--kernel", "laplace"])
