"""Fashion-MNIST at real size: ``ella.ELLA(model)`` with its defaults beside the peers users run today.

    python benchmarks/fashion_mnist.py                          # the MLP and the CNN, 2 threads
    python benchmarks/fashion_mnist.py --models mlp --limit 600 # one network, 10 minutes a method
    python benchmarks/fashion_mnist.py --device cuda            # on a GPU

The data are the Debian package ``dataset-fashion-mnist`` (or ``--data-root``): 54,000 training, 6,000
validation and 10,000 test images. Each network (``mlp``: 784-200-200-10 tanh, 199,210 weights; ``cnn``: two conv
blocks, 28,938 weights) is trained once to a MAP; then every method runs in a fresh process of its own on that
network, within ``--limit`` seconds: a method that runs past it, or whose process dies (out of memory), is a row
that says so, with its limit, never a dropped one. Per method: accuracy, NLL, ECE (15 bins), fit seconds (and
ELLA's stages), peak memory, ``predict`` as a multiple of the MAP forward pass in pieces of the method's own
``batch_size`` (median of 3 paired timings), the AUROC of the predictive entropy on two OOD sets (scikit-learn's
digits scaled to 28 x 28; uniform noise) and the NLL along a rotation curve.

The rows: ``map``, ``temperature_scaling``, ``ella`` (``ELLA(model)``, nothing else), ``ella_neuralef_residual``
(the benchmark table's NeuralEF settings with S' = 8 residual directions), ``last_layer_kfac_marglik``
(laplace-torch's README: its default last-layer KFAC, marginal-likelihood prior, probit), ``last_layer_lla_marglik``
(the same with the full last-layer GGN), ``kfac_lla`` (all-weights KFAC, the validation grid),
``laplace_torch_native_ella`` and ``laplace_torch_valla`` (laplace-torch 0.3's own ELLA, M = 2,000
and K = 20 with its grid, and VaLLA, 100 inducing outputs, each with its own predictive). Writes
``fashion_mnist.json`` (networks and methods not run this time keep their earlier rows), ``fashion_mnist.md`` and
``fashion_mnist_<model>_shift.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch

from ella_lab.compare.benchmark import shift_and_ood_sets
from ella_lab.compare.driver import compare_problem
from ella_lab.compare.methods import Settings
from ella_lab.compare.problems import IMAGE_RECIPE, IMAGE_SPLITS, Problem, image_cnn, image_mlp, make_problem
from ella_lab.data.images import image_dataset
from ella_lab.plots import shift_curves
from ella_lab.report import environment

ROOT = Path(__file__).resolve().parent.parent
METHODS = (
    "map",
    "temperature_scaling",
    "ella",
    "ella_neuralef_residual",
    "last_layer_kfac_marglik",
    "last_layer_lla_marglik",
    "kfac_lla",
    "laplace_torch_native_ella",
    "laplace_torch_valla",
)
# the published table for the same MLP (VaLLA's repository results, Fashion-MNIST, test NLL)
PUBLISHED = {
    "map": 0.3733,
    "ella (M = 2,000, K = 20)": 0.3732,
    "valla (M = 100)": 0.3547,
    "valla (M = 500)": 0.3485,
    "last-layer KFAC": 0.3728,
    "all-weights KFAC": 0.3767,
    "all-weights diagonal": 0.3973,
}


def _problem(model_name: str, state: dict, seed: int, data_root, device: str) -> Problem:
    """The trained network on the data, rebuilt in a method's own process (the data are read again: 2 s)."""
    train, val = IMAGE_SPLITS["fashionmnist"]
    splits = image_dataset("fashionmnist", data_root, num_train=train, num_val=val, num_test=10000)
    net = image_mlp(784, 10, seed) if model_name == "mlp" else image_cnn(1, 10, 28, seed)
    net.load_state_dict(state)
    return Problem(
        "fashionmnist", model_name, splits, net.to(device).eval(), "classification", dict(IMAGE_RECIPE), 0.0, seed
    )


def _run_one(model_name, state_path, method, seed, data_root, device, threads, out_path) -> None:
    """One method in this process: fit, score, cost, shift and OOD; the section goes to ``out_path``."""
    torch.set_num_threads(threads)
    problem = _problem(model_name, torch.load(state_path, weights_only=True), seed, data_root, device)
    shift, ood = shift_and_ood_sets(problem, 2000, 2000)
    section, _ = compare_problem(problem, [method], Settings(), shift, ood, fidelity_points=0, log=lambda *a: None)
    Path(out_path).write_text(json.dumps(section, default=float))


def run_method(model_name, state_path, method, args, scratch: Path) -> dict:
    """``_run_one`` in a fresh process within ``args.limit`` seconds; a row saying why when it ends otherwise."""
    out = scratch / f"{model_name}-{method}.json"
    proc = mp.get_context("spawn").Process(
        target=_run_one,
        args=(model_name, str(state_path), method, args.seed, args.data_root, args.device, args.threads, out),
    )
    start = time.perf_counter()
    proc.start()
    proc.join(args.limit)
    seconds = time.perf_counter() - start
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"status": f"stopped at the {args.limit:.0f} s limit"}
    if proc.exitcode != 0 or not out.exists():
        killed = proc.exitcode and proc.exitcode < 0
        why = "killed (out of memory?)" if killed else f"failed (exit code {proc.exitcode})"
        return {"status": f"{why} after {seconds:.0f} s"}
    return {"status": "ok", "section": json.loads(out.read_text())}


def _fmt(value, kind="num") -> str:
    if value is None:
        return "-"
    return {
        "pct": f"{100 * value:.2f}%",
        "num": f"{value:.4f}",
        "x": f"{value:.2f}x",
        "s": f"{value:.1f} s",
        "mb": f"{value:,.0f} MB",
    }[kind]


def table(model_name: str, result: dict) -> str:
    ood_names = sorted({name for row in result["rows"].values() for name in row.get("ood", {})})
    head = [
        "method",
        "acc",
        "NLL",
        "ECE",
        *[f"AUROC {n}" for n in ood_names],
        "fit",
        "fit peak",
        "predict / MAP",
        "rotation NLL (0/45/90)",
    ]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for name, row in result["rows"].items():
        if row["status"] != "ok":
            lines.append(f"| {name} | {row['status']} |" + " |" * (len(head) - 2))
            continue
        curve = {p["level"]: p["nll"] for p in row["shift"].get("rotation", [])}
        fit = _fmt(row["fit_seconds"], "s")
        if row.get("stage_seconds"):
            fit += " (" + ", ".join(f"{k} {v:.1f}" for k, v in row["stage_seconds"].items()) + ")"
        cells = [
            name,
            _fmt(row["acc"], "pct"),
            _fmt(row["nll"]),
            _fmt(row["ece"], "pct"),
            *[_fmt(row["ood"].get(n, {}).get("auroc")) for n in ood_names],
            fit,
            _fmt(row["fit_peak_mb"], "mb"),
            _fmt(row["predict_vs_map"], "x"),
            " / ".join(_fmt(curve.get(a)) for a in (0.0, 45.0, 90.0)),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def render(results: dict, out: Path) -> str:
    """``fashion_mnist.md`` and the shift plots from the results (all networks); returns the markdown."""
    text = [
        f"Generated by `python benchmarks/fashion_mnist.py` ({results['threads']} threads, "
        f"{results['limit_seconds']:.0f} s a method; torch {results['environment'].get('torch')}).",
        "",
    ]
    for model_name, result in results["models"].items():
        text += [f"### Fashion-MNIST, {model_name} (P = {result['num_params']:,})", "", table(model_name, result), ""]
        curves = {
            name: row["shift"]["rotation"]
            for name, row in result["rows"].items()
            if row["status"] == "ok" and "rotation" in row["shift"]
        }
        if curves:
            shift_curves(
                {"rotation": curves},
                out / f"fashion_mnist_{model_name}_shift.png",
                f"Fashion-MNIST {model_name}: rotated test images",
            )
    text += [
        "Published, same MLP (VaLLA repository, test NLL): "
        + ", ".join(f"{k} {v:.4f}" for k, v in PUBLISHED.items())
        + "."
    ]
    (out / "fashion_mnist.md").write_text("\n".join(text) + "\n")
    return "\n".join(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=("mlp", "cnn"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--limit", type=float, default=900.0, help="seconds a method may take (default 900)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None, help="folder of the idx files (default: the Debian package)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    saved = out / "fashion_mnist.json"  # the networks not run this time keep their earlier rows
    models = json.loads(saved.read_text())["models"] if saved.exists() else {}
    results = {
        "environment": environment(),
        "threads": args.threads,
        "limit_seconds": args.limit,
        "published_mlp_nll": PUBLISHED,
        "models": models,
    }
    with tempfile.TemporaryDirectory() as scratch:
        for model_name in args.models:
            problem = make_problem(
                "fashion-mnist", model_name, seed=args.seed, data_root=args.data_root, progress=False
            )
            state_path = Path(scratch) / f"{model_name}.pt"
            torch.save(problem.model.state_dict(), state_path)
            print(f"[{model_name}] MAP trained in {problem.train_seconds:.0f} s", flush=True)
            rows = {}
            for method in args.methods:
                outcome = run_method(model_name, state_path, method, args, Path(scratch))
                if outcome["status"] == "ok":
                    section = outcome["section"]
                    row = {
                        "status": "ok",
                        **section["rows"][method],
                        "shift": {c: v[method] for c, v in section["shift"].items()},
                        "ood": {n: v[method] for n, v in section["ood"].items()},
                    }
                else:
                    row = outcome
                rows[method] = row
                print(
                    f"[{model_name}] {method}: "
                    + (
                        f"nll {row['nll']:.4f}, ece {row['ece']:.4f}, fit {row['fit_seconds']:.1f} s"
                        if row["status"] == "ok"
                        else row["status"]
                    ),
                    flush=True,
                )
            # the methods not run this time keep their earlier rows (the MAP training is seeded: the same network)
            earlier = models.get(model_name, {}).get("rows", {})
            rows = {m: rows.get(m, earlier.get(m)) for m in [*METHODS, *rows] if m in rows or m in earlier}
            results["models"][model_name] = {
                "num_params": sum(p.numel() for p in problem.model.parameters()),
                "map_training_seconds": problem.train_seconds,
                "rows": rows,
            }
    saved.write_text(json.dumps(results, indent=1, default=float))
    print(render(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
