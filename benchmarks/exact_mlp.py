"""Exact full-GGN LLA on the MNIST-1D MLP (P = 15,210), beyond the comparison's ``exact_max_params``.

    python benchmarks/exact_mlp.py     # -> benchmarks/results/exact_mlp.json

The main benchmark forms the exact GGN only up to 8,000 weights; this run forms the 15,210 x 15,210 one once
(about 40 minutes on one thread), to learn what the exact linearised Laplace answer is on the overfitting
MLP: its NLL and its out-of-distribution AUROC against MAP's, on the same data as ``benchmarks/run.py``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ella_lab.compare.benchmark import shift_and_ood_sets
from ella_lab.compare.driver import compare_problem
from ella_lab.compare.methods import Settings
from ella_lab.compare.problems import make_problem

OUT = Path(__file__).resolve().parent / "results" / "exact_mlp.json"


def main() -> None:
    torch.set_num_threads(1)
    problem = make_problem("mnist1d", "mlp", seed=0, progress=False)
    _, ood = shift_and_ood_sets(problem)
    settings = replace(Settings(), exact_max_params=16000)
    section, _ = compare_problem(problem, ["map", "exact_lla"], settings, ood=ood, fidelity_points=0)
    keep = ("nll", "ece", "acc", "fit_seconds", "predict_seconds_per_1000")
    summary = {
        "num_params": section["num_params"],
        "threads": 1,
        "rows": {m: {k: r[k] for k in keep} for m, r in section["rows"].items()},
        "ood": {s: {m: v["auroc"] for m, v in rows.items()} for s, rows in section["ood"].items()},
    }
    OUT.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
