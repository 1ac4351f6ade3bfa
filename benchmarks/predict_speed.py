"""Prediction cost of every method as a ratio to the MAP forward pass, measured in one run.

Trains the MNIST-1D MAP models (CNN and MLP), fits the methods once, then times ``predict`` on the first 2,000
test inputs for each (``--repeats`` timings, each paired with a MAP forward pass on the same inputs just before
it, same thread count, in one process), and prints and writes the median seconds per 1,000 inputs and the median
ratio to the MAP forward pass with its spread (min and max), and where ``ella_neuralef``'s time goes (the MAP
forward, the eigenfunction network, the checks of every call, the posterior factor with the link).

The eigenfunction network's trade-off: ``ella_neuralef`` reads the eigenfunctions off the model's own hidden
features (``NeuralEF(net="head")``, the default), ``ella_neuralef_copy`` learns them with a widened copy of the
model (``net="copy"``, the papers' network), and on the CNN ``ella_neuralef_c{C}`` with the MNIST-1D CNN of ``C``
channels (``--widths``) instead of the model's 25; every method's test NLL on the first 2,000 test points is set
beside the exact linearised Laplace's (``exact_lla``, the full GGN) on the same points: the fidelity each saving
costs. On ResNet-20 (freshly initialised, synthetic images, reduced fit settings) the same two networks show
where a head pays: a model whose forward pass outweighs the head.

    python benchmarks/predict_speed.py [--test 10000] [--repeats 5] [--threads 2] [--widths 4 8 16]
                                       [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ella.eigen import NeuralEF, Nystrom
from ella.eigen.nets import eigenfunction_net
from ella.kernels import EmpiricalNTK
from ella.methods import ELLA, KFACLLA, MAP, ExactLLA, Tuning
from ella.metrics import nll
from ella_lab.compare import Settings
from ella_lab.compare.cost import seconds_per_1000
from ella_lab.compare.driver import predict_cost
from ella_lab.data import mnist1d
from ella_lab.data.images import synthetic_images
from ella_lab.models import cifar_resnet, mnist1d_cnn
from ella_lab.train import train_mnist1d_cnn, train_mnist1d_mlp

FIDELITY_POINTS = 2000  # test points the NLL of every method is compared with exact LLA's on


def breakdown(post: ELLA, x: torch.Tensor, repeats: int) -> dict:
    """Where ``post.predict`` spends its time, seconds per 1,000 inputs (medians): the MAP forward, the eigenfunction
    network, and the rest (the checks every call makes, the posterior factor and the link)."""
    parts = {
        "map_forward": post.model,
        "eigenfunction_net": post.solver_,
        "predict": post.predict,
    }
    with torch.no_grad():
        out = {part: statistics.median(seconds_per_1000(fn, x, repeats)) for part, fn in parts.items()}
    out["checks_posterior_and_link"] = out["predict"] - out["map_forward"] - out["eigenfunction_net"]
    return out


def search(settings: Settings, **more) -> dict:
    """The prior grid and fold-in of the benchmark table's ELLA rows, so that the NLLs here match its own."""
    return {"tuning": Tuning(prior_grid=settings.grid(), fold_in=settings.fold_in, **more)}


def neuralef_with(model, settings: Settings, net) -> ELLA:
    """``ella_neuralef`` with the eigenfunction network ``net`` (``"copy"``, ``"head"`` or a network)."""
    options = settings.neuralef(model)
    default = options["solver"]
    options["solver"] = NeuralEF(settings.k, net=net, steps=default.steps, lr=default.lr, progress=False)
    return ELLA(model, progress=False, **options, **search(settings))


def narrow_neuralef(model, settings: Settings, channels: int, x: torch.Tensor) -> ELLA:
    """``ella_neuralef`` whose eigenfunction network is the MNIST-1D CNN with ``channels`` channels."""
    return neuralef_with(model, settings, eigenfunction_net(mnist1d_cnn(channels=channels), settings.k, x[:2], 10))


def resnet_rows(repeats: int) -> dict:
    """ResNet-20 (freshly initialised: its cost does not depend on training) on synthetic 3 x 32 x 32 images,
    reduced fit settings: the eigenfunction networks' prediction cost where the model outweighs a head."""
    model = cifar_resnet(20).eval()
    train = DataLoader(synthetic_images(2000), batch_size=128)
    val = DataLoader(synthetic_images(500, 1), batch_size=250)
    x = synthetic_images(1000, 2).tensors[0]
    methods = {"map": MAP(model)}
    for net in ("head", "copy"):
        methods[f"ella_neuralef_{net}"] = ELLA(
            model,
            kernel=EmpiricalNTK(model, "fd", 16, progress=False),
            kernel_points=500,
            progress=False,
            solver=NeuralEF(20, net=net, steps=50, batch_size=64, lr=5e-3, progress=False),
        )
    rows = {}
    for name, method in methods.items():
        method.fit(train, val)
        cost = predict_cost(method.predict, x, model, repeats, piece=method.batch_size)
        rows[name] = {
            "seconds_per_1000": cost["predict_seconds_per_1000"],
            "ratio_to_map": cost["predict_vs_map"],
            "ratio_range": cost["predict_vs_map_range"],
            "fit_seconds": method.fit_seconds_,
        }
        low, high = cost["predict_vs_map_range"]
        print(
            f"  ResNet-20 {name:20s} fit {method.fit_seconds_:6.1f} s   predict {cost['predict_vs_map']:.2f}x MAP "
            f"[{low:.2f}, {high:.2f}]",
            flush=True,
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--widths",
        nargs="*",
        type=int,
        default=[4, 8, 16],
        help="CNN: channels of the cheaper eigenfunction networks to measure (default: 4 8 16)",
    )
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
            "ella_neuralef_mc": None,
            "ella_neuralef_residual": ELLA(
                model,
                progress=False,
                **settings.neuralef(model),
                **search(settings, residual=settings.residual_samples),
            ),
            "ella_nystrom": ELLA(
                model, solver=Nystrom(settings.k, settings.nystrom_points), progress=False, **search(settings)
            ),
            "kfac_lla": KFACLLA(model, progress=False),
        }
        if name == "cnn":
            methods.update({f"ella_neuralef_c{c}": narrow_neuralef(model, settings, c, x) for c in args.widths})
            methods["exact_lla"] = ExactLLA(model, progress=False, tuning=Tuning(prior_grid=settings.grid()))
        rows = {}
        for method_name, method in methods.items():
            if method_name == "ella_neuralef_mc":  # the same posterior, Monte-Carlo link (512 samples)
                post = methods["ella_neuralef"]
                fn = partial(post.predict, link="mc")
            else:
                method.fit(train, val)
                fn = method.predict
            slow = method_name in ("kfac_lla", "exact_lla")  # their dense Jacobians are slow
            cost = predict_cost(fn, x, model, 3 if slow else args.repeats, piece=(method or post).batch_size)
            rows[method_name] = {
                "seconds_per_1000": cost["predict_seconds_per_1000"],
                "ratio_to_map": cost["predict_vs_map"],
                "ratio_range": cost["predict_vs_map_range"],
                "repeats": 3 if slow else args.repeats,
                "nll": nll(fn(x[:FIDELITY_POINTS]), y[:FIDELITY_POINTS]),
            }
        for row in rows.values():
            if "exact_lla" in rows:
                row["nll_gap_to_exact"] = row["nll"] / rows["exact_lla"]["nll"] - 1
        results[name] = {**rows, "breakdown": breakdown(methods["ella_neuralef"], x, args.repeats)}
        print(
            f"\nMNIST-1D {name}: predict seconds per 1,000 inputs and as a multiple of the MAP forward pass, "
            f"median of {args.repeats} paired timings [min, max], threads = {torch.get_num_threads()}"
        )
        for method_name, row in rows.items():
            gap = f"   NLL {row['nll']:.4f}" + (
                f" ({100 * row['nll_gap_to_exact']:+.2f}% to exact)" if "nll_gap_to_exact" in row else ""
            )
            low, high = row["ratio_range"]
            print(
                f"  {method_name:24s} {row['seconds_per_1000']:8.4f} s   {row['ratio_to_map']:7.1f}x MAP "
                f"[{low:.1f}, {high:.1f}]{gap}"
            )
        print(
            "  ella_neuralef's predict, seconds per 1,000 inputs: "
            + ", ".join(f"{part} {seconds:.4f}" for part, seconds in results[name]["breakdown"].items())
        )
    print(f"\nResNet-20, synthetic images (reduced fit settings), median of {args.repeats} paired timings:")
    results["resnet20"] = resnet_rows(args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_speed.json").write_text(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "test_points": args.test,
                "fidelity_points": FIDELITY_POINTS,
                "models": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
