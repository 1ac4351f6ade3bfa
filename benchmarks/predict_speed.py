"""Prediction cost of every method as a ratio to the MAP forward pass, measured in one run.

Trains the MNIST-1D MAP models (CNN and MLP), fits the methods once, then times ``predict`` on the same
test inputs for each (``--repeats`` runs after a warm-up, same thread count, in one process), and prints and
writes the median seconds per 1,000 inputs with the spread (min and max) and the median ratio to MAP, and where
``ella_neuralef``'s time goes (the MAP forward, the eigenfunction network, the checks of every call, the posterior
factor with the link).

The trade-off of a cheaper eigenfunction network: on the CNN, ``ella_neuralef_c{C}`` learns the eigenfunctions
with the MNIST-1D CNN of ``C`` channels (``--widths``) in place of the default copy of the model (25 channels);
every method's test NLL on the first 2,000 test points is set beside the exact linearised Laplace's
(``exact_lla``, the full GGN) on the same points: the fidelity each saving costs.

    python benchmarks/predict_speed.py [--test 10000] [--repeats 5] [--threads 2] [--widths 4 8 16]
                                       [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ella.eigen import NeuralEF, Nystrom
from ella.eigen.nets import eigenfunction_net
from ella.experiments.compare import Settings
from ella.experiments.compare.cost import seconds_per_1000
from ella.experiments.data import mnist1d
from ella.experiments.models import mnist1d_cnn
from ella.experiments.train import train_mnist1d_cnn, train_mnist1d_mlp
from ella.methods import ELLA, KFACLLA, MAP, ExactLLA
from ella.metrics import nll

FIDELITY_POINTS = 2000  # test points the NLL of every method is compared with exact LLA's on


def breakdown(post: ELLA, x: torch.Tensor, repeats: int) -> dict:
    """Where ``post.predict`` spends its time, seconds per 1,000 inputs (medians): the MAP forward, the eigenfunction
    network, the checks every call makes, and the rest (the posterior factor and the link)."""
    parts = {"map_forward": post.model, "eigenfunction_net": post.solver_, "checks": post._checked,
             "predict": post.predict}
    with torch.no_grad():
        out = {part: statistics.median(seconds_per_1000(fn, x, repeats)) for part, fn in parts.items()}
    out["posterior_and_link"] = out["predict"] - out["map_forward"] - out["eigenfunction_net"] - out["checks"]
    return out


def search(settings: Settings) -> dict:
    """The prior grid and fold-in of the benchmark table's ELLA rows, so that the NLLs here match its own."""
    return {"prior_grid": settings.grid(), "fold_in": settings.fold_in}


def neuralef_with(model, settings: Settings, net) -> ELLA:
    """``ella_neuralef`` with the eigenfunction network ``net`` (``"copy"``, ``"head"`` or a network)."""
    options = settings.neuralef(model)
    default = options["solver"]
    options["solver"] = NeuralEF(settings.k, net=net, steps=default.steps, lr=default.lr, progress=False)
    return ELLA(model, progress=False, **options, **search(settings))


def narrow_neuralef(model, settings: Settings, channels: int, x: torch.Tensor) -> ELLA:
    """``ella_neuralef`` whose eigenfunction network is the MNIST-1D CNN with ``channels`` channels."""
    return neuralef_with(model, settings, eigenfunction_net(mnist1d_cnn(channels=channels), settings.k, x[:2], 10))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--widths", nargs="*", type=int, default=[4, 8, 16],
                        help="CNN: channels of the cheaper eigenfunction networks to measure (default: 4 8 16)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = mnist1d(num_test=args.test)
    train, val = DataLoader(data.train, batch_size=256), DataLoader(data.val, batch_size=500)
    x, y = data.test.tensors
    results = {}
    settings = Settings()  # the benchmark's ELLA settings (prediction cost does not depend on them)
    for name, trainer in (("cnn", train_mnist1d_cnn), ("mlp", train_mnist1d_mlp)):
        model, _ = trainer(data, progress=False)
        methods = {
            "map": MAP(model),
            "ella_neuralef": ELLA(model, progress=False, **settings.neuralef(model), **search(settings)),
            "ella_neuralef_copy": neuralef_with(model, settings, "copy"),
            "ella_neuralef_head": neuralef_with(model, settings, "head"),
            "ella_neuralef_mc": None,
            "ella_neuralef_residual": ELLA(model, progress=False, residual_samples=settings.residual_samples,
                                           **settings.neuralef(model), **search(settings)),
            "ella_nystrom": ELLA(model, solver=Nystrom(settings.k, settings.nystrom_points), progress=False,
                                 **search(settings)),
            "kfac_lla": KFACLLA(model, progress=False),
        }
        if name == "cnn":
            methods.update({f"ella_neuralef_c{c}": narrow_neuralef(model, settings, c, x) for c in args.widths})
            methods["exact_lla"] = ExactLLA(model, prior_grid=settings.grid(), progress=False)
        rows = {}
        for method_name, method in methods.items():
            if method_name == "ella_neuralef_mc":  # the same posterior, Monte-Carlo link (512 samples)
                post = methods["ella_neuralef"]
                fn = lambda xb: post.predict(xb, link="mc")
            else:
                method.fit(train, val)
                fn = method.predict
            slow = method_name in ("kfac_lla", "exact_lla")  # their dense Jacobians are slow
            points = x[:2000] if slow else x
            per_1000 = seconds_per_1000(fn, points, 3 if slow else args.repeats)
            rows[method_name] = {"seconds_per_1000": statistics.median(per_1000), "min": min(per_1000),
                                 "max": max(per_1000), "repeats": len(per_1000),
                                 "nll": nll(fn(x[:FIDELITY_POINTS]), y[:FIDELITY_POINTS])}
        unit = rows["map"]["seconds_per_1000"]
        for row in rows.values():
            row["ratio_to_map"] = row["seconds_per_1000"] / unit
            if "exact_lla" in rows:
                row["nll_gap_to_exact"] = row["nll"] / rows["exact_lla"]["nll"] - 1
        results[name] = {**rows, "breakdown": breakdown(methods["ella_neuralef"], x, args.repeats)}
        print(f"\nMNIST-1D {name}: predict seconds per 1,000 inputs, median of {args.repeats} (min - max), "
              f"threads = {torch.get_num_threads()}")
        for method_name, row in rows.items():
            gap = f"   NLL {row['nll']:.4f}" + (f" ({100 * row['nll_gap_to_exact']:+.2f}% to exact)"
                                                   if "nll_gap_to_exact" in row else "")
            print(f"  {method_name:24s} {row['seconds_per_1000']:8.4f} s ({row['min']:.4f} - {row['max']:.4f})"
                  f"   {row['ratio_to_map']:7.1f}x MAP{gap}")
        print("  ella_neuralef's predict, seconds per 1,000 inputs: " +
              ", ".join(f"{part} {seconds:.4f}" for part, seconds in results[name]["breakdown"].items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps({"threads": torch.get_num_threads(), "test_points": args.test,
                                                         "fidelity_points": FIDELITY_POINTS, "models": results},
                                                        indent=2))


if __name__ == "__main__":
    main()
