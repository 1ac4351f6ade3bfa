"""How ELLA's fit scales: seconds and peak memory against the training-set size N, the network's size P, the
number of eigenfunctions k and the number of processes, beside laplace-torch's KFAC-LLA at the same points.

    python benchmarks/scale.py                     # every part, reduced sizes where a part needs them
    python benchmarks/scale.py --parts n processes # some parts
    python benchmarks/scale.py --device cuda       # on a GPU (peak memory: CUDA max allocated)
    python benchmarks/scale.py --smoke             # seconds, for tests

Parts (each writes its rows to ``scale.json`` and a log-log plot ``scale_<part>.png`` in ``--out``):

* ``n``: MNIST-1D training sets of 3,500, 20,000, 100,000 and 200,000 signals (fresh draws of the generator) for the
  reference CNN, each size and method in a fresh process after a short warm-up fit: ELLA's fit seconds and peak
  memory (RSS increase; CUDA max allocated on a GPU; median of ``--repeats`` fits with the spread), KFAC-LLA's the same
  until its time cap, and the prediction cost of each as a multiple of the MAP forward pass (median of 3).
* ``p``: the MNIST-1D CNN widened to about 10k, 100k and 1M weights on 3,500 signals; a CIFAR-style ResNet-20
  (0.27M) on 50,000 synthetic 3 x 32 x 32 images; torchvision's ``resnet18`` (11M) on 5,000 (reduced settings on
  the CPU, named in each row). The ResNets are freshly initialised: the cost of a fit does not depend on training.
* ``k``: 10, 20 and 50 eigenfunctions on the MNIST-1D CNN.
* ``m``: the number of kernel points M (the training inputs the eigenfunctions are learned on) against fit
  seconds, peak memory and test NLL on the MNIST-1D CNN, two seeds each: what the default ``kernel_points`` rests on.
* ``processes``: the NTK feature stage on 1 and on 2 processes of one thread each (gloo), and its speed-up.

Every row says its settings; a method that runs past its time cap or out of memory is recorded as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA, distributed
from ella.eigen import NeuralEF
from ella.kernels import EmpiricalNTK
from ella.methods import KFACLLA, Predictive
from ella.utils import num_parameters
from ella_lab.compare.cost import PeakMemory, seconds_per_1000
from ella_lab.data import mnist1d
from ella_lab.data.images import synthetic_images
from ella_lab.data.mnist1d import mnist1d_signals
from ella_lab.models import cifar_resnet, mnist1d_cnn
from ella_lab.train import train_mnist1d_cnn

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20


class TimeCap(Exception):
    pass


def capped(seconds: float, fn, *args):
    """``fn(*args)``, or :class:`TimeCap` once ``seconds`` have passed (POSIX alarm, main thread)."""

    def stop(*_):
        raise TimeCap()

    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(seconds)))
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def measured(fn, *args, device="cpu", cap: float | None = None) -> dict:
    """Seconds and peak memory (MB) of ``fn(*args)``; ``status`` "ok", "time cap" or "out of memory"; ``stages``:
    the seconds of each stage of an ELLA fit."""
    memory = PeakMemory(device)
    start = time.perf_counter()
    try:
        with memory:
            result = capped(cap, fn, *args) if cap else fn(*args)
        status = "ok"
    except TimeCap:
        result, status = None, "time cap"
    except (torch.cuda.OutOfMemoryError, MemoryError):
        result, status = None, "out of memory"
    seconds = time.perf_counter() - start
    peak = None if memory.peak is None else memory.peak / MB
    row = {"seconds": seconds, "peak_mb": peak, "status": status}
    stages = getattr(result, "stage_seconds_", None)
    return row if stages is None else {**row, "stages": stages}


def repeated(make, repeats: int, *args, device="cpu") -> tuple[object, dict]:
    """``repeats`` fits of fresh ``make()`` methods: the last one fitted, and the median seconds and peak memory with
    their spread (``seconds_range``, ``peak_range``) and the stages of the median fit."""
    fits, method = [], None
    for _ in range(repeats):
        method = make()
        fits.append(measured(method.fit, *args, device=device))
    middle = sorted(fits, key=lambda fit: fit["seconds"])[len(fits) // 2]
    peaks = [fit["peak_mb"] for fit in fits if fit["peak_mb"] is not None]
    row = {
        **middle,
        "seconds_range": [min(f["seconds"] for f in fits), max(f["seconds"] for f in fits)],
        "peak_mb": statistics.median(peaks) if peaks else None,
        "peak_range": [min(peaks), max(peaks)] if peaks else None,
        "repeats": repeats,
        "status": "ok" if all(f["status"] == "ok" for f in fits) else middle["status"],
    }
    return method, row


def predict_ratio(method, model, x: torch.Tensor, repeats: int = 3) -> dict:
    """Prediction time per input as a multiple of the MAP forward pass: median of ``repeats`` (min, max)."""
    with torch.no_grad():
        base = statistics.median(seconds_per_1000(lambda z: [model(p) for p in z.split(512)], x, repeats, len(x)))
    times = seconds_per_1000(method.predict, x, repeats, len(x))
    return {"predict_vs_map": statistics.median(times) / base, "min": min(times) / base, "max": max(times) / base}


def ella_for(model, settings: dict, seed: int = 0) -> ELLA:
    kernel = EmpiricalNTK(model, "fd", settings["samples"], seed=seed, progress=False)
    solver = NeuralEF(
        settings["k"],
        steps=settings["steps"],
        batch_size=settings.get("batch", 256),
        lr=5e-3,
        seed=seed,
        progress=False,
    )
    return ELLA(
        model,
        kernel=kernel,
        solver=solver,
        kernel_points=settings["points"],
        progress=False,
        seed=seed,
        predictive=Predictive(batch_size=settings.get("predict_batch", 512)),
    )


# ------------------------------------------------------------------------------------------------- the parts
def _size_worker(rank: int, method: str, n: int, settings: dict, state: str, out: str, args) -> None:
    """One training-set size and one method in a fresh process: the allocator's history of other sizes stays out of
    the peak memory; a short warm-up fit first keeps the libraries' one-time allocations out of it too."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = mnist1d(num_test=1000)
    model = mnist1d_cnn()
    model.load_state_dict(torch.load(state, weights_only=True))
    model = model.to(device).eval()
    train_set = data.train if n == len(data.train) else mnist1d_signals(n, seed=100 + n)
    train, val = DataLoader(train_set, batch_size=512), DataLoader(data.val, batch_size=1000)
    warm = DataLoader(TensorDataset(*data.train[:1000]), batch_size=512)
    test_x = data.test.tensors[0].to(device)
    row = {"part": "n", "method": method, "N": n, "P": num_parameters(model)}
    if method == "ella":
        ella_for(model, {**settings, "steps": 10}).fit(warm, val)
        post, fit = repeated(lambda: ella_for(model, settings), args.repeats, train, val, device=device)
        row.update(**settings, **fit, **predict_ratio(post, model, test_x))
    else:
        KFACLLA(model, prior="marglik", progress=False).fit(warm)
        kfac = KFACLLA(model, prior="marglik", progress=False)
        fit = measured(kfac.fit, train, device=device, cap=args.cap)
        row.update(fit)
        if fit["status"] == "ok":
            row.update(predict_ratio(kfac, model, test_x[:500]))
    Path(out).write_text(json.dumps(row))


def part_n(args, device) -> list[dict]:
    sizes = (3500, 20000) if args.smoke else (3500, 20000, 100000, 200000)
    settings = (
        dict(samples=250, steps=2000, k=20, points=5000)
        if not args.smoke
        else dict(samples=16, steps=20, k=5, points=500)
    )
    model, _ = train_mnist1d_cnn(mnist1d(num_test=1000), progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "model.pt")
        torch.save(model.state_dict(), state)
        for n in sizes:
            for method in ("ella", "kfac_lla"):
                out = os.path.join(tmp, f"{method}{n}.json")
                mp.spawn(_size_worker, args=(method, n, settings, state, out, args), nprocs=1, join=True)
                rows.append(json.loads(Path(out).read_text()))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def part_p(args, device) -> list[dict]:
    data = mnist1d(num_test=1000)
    cpu = device.type == "cpu"
    small = dict(samples=250, steps=2000, k=20, points=3500)
    cases = [
        (f"mnist1d_cnn_c{c}", lambda c=c: mnist1d_cnn(channels=c), data.train, data.val, data.test.tensors[0], small)
        for c in ((48, 160, 512) if not args.smoke else (8,))
    ]
    if not args.smoke:
        resnet20 = dict(samples=64, steps=300, k=20, points=1000, batch=128) if cpu else dict(small, points=5000)
        cases.append(
            (
                "resnet20",
                lambda: cifar_resnet(20),
                synthetic_images(50000),
                synthetic_images(2000, 1),
                synthetic_images(1000, 2).tensors[0],
                resnet20,
            )
        )
        from torchvision.models import resnet18

        reduced = dict(samples=16, steps=50, k=10, points=200, batch=32) if cpu else dict(small, points=2000)
        cases.append(
            (
                "resnet18",
                lambda: resnet18(num_classes=10),
                synthetic_images(5000 if cpu else 50000),
                synthetic_images(500, 1),
                synthetic_images(200, 2).tensors[0],
                reduced,
            )
        )
    if args.models:
        cases = [case for case in cases if case[0] in args.models]
    rows = []
    for name, make, train_set, val_set, test_x, settings in cases:
        if args.smoke:
            settings = dict(samples=8, steps=10, k=5, points=200)
        model = make().to(device).eval()
        train, val = DataLoader(train_set, batch_size=256), DataLoader(val_set, batch_size=500)
        post = ella_for(model, settings)
        fit = measured(post.fit, train, val, device=device)
        row = {
            "part": "p",
            "method": "ella",
            "model": name,
            "N": len(train_set),
            "P": num_parameters(model),
            **settings,
            **fit,
        }
        row.update(predict_ratio(post, model, test_x.to(device)))
        rows.append(row)
        print(json.dumps(row), flush=True)
        kfac = KFACLLA(model, prior="marglik", progress=False)
        fit = measured(kfac.fit, train, device=device, cap=args.cap)
        rows.append(
            {"part": "p", "method": "kfac_lla", "model": name, "N": len(train_set), "P": num_parameters(model), **fit}
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def part_k(args, device) -> list[dict]:
    data = mnist1d(num_test=1000)
    model, _ = train_mnist1d_cnn(data, progress=False)
    model = model.to(device)
    train, val = DataLoader(data.train, batch_size=512), DataLoader(data.val, batch_size=1000)
    rows = []
    for k in (10, 20, 50) if not args.smoke else (3, 6):
        settings = (
            dict(samples=250, steps=2000, k=k, points=5000)
            if not args.smoke
            else dict(samples=16, steps=20, k=k, points=500)
        )
        post = ella_for(model, settings)
        fit = measured(post.fit, train, val, device=device)
        rows.append(
            {
                "part": "k",
                "method": "ella",
                "N": len(data.train),
                "P": num_parameters(model),
                **settings,
                **fit,
                **predict_ratio(post, model, data.test.tensors[0].to(device)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def part_m(args, device) -> list[dict]:
    from ella import evaluate

    data = mnist1d(num_test=10000 if not args.smoke else 500)
    model, _ = train_mnist1d_cnn(data, progress=False)
    model = model.to(device)
    train, val = DataLoader(data.train, batch_size=512), DataLoader(data.val, batch_size=1000)
    test = DataLoader(data.test, batch_size=1000)
    rows = []
    for points in (250, 500, 1000, 2000, 3500) if not args.smoke else (100, 200):
        for seed in (0, 1):
            settings = (
                dict(samples=250, steps=2000, k=20, points=points)
                if not args.smoke
                else dict(samples=16, steps=20, k=5, points=points)
            )
            post = ella_for(model, settings, seed=seed)
            fit = measured(post.fit, train, val, device=device)
            rows.append(
                {
                    "part": "m",
                    "method": "ella",
                    "seed": seed,
                    "N": len(data.train),
                    **settings,
                    **fit,
                    "test_nll": evaluate(post, test)["nll"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _features_worker(rank: int, size: int, init: str, out: str, samples: int, points: int) -> None:
    torch.set_num_threads(1)
    if size > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        data = mnist1d(num_test=10)
        model = mnist1d_cnn().eval()
        x = data.train.tensors[0][:points]
        kernel = EmpiricalNTK(model, "fd", samples, progress=False)
        kernel.features(x[:8])  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            with distributed.sharing():
                phi = kernel.features(x)
            times.append(time.perf_counter() - start)
        if rank == 0:
            Path(out).write_text(json.dumps({"seconds": times, "checksum": float(phi.double().sum())}))
    finally:
        if size > 1:
            dist.destroy_process_group()


def part_processes(args, device) -> list[dict]:
    samples, points = (512, 3500) if not args.smoke else (64, 200)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (1, 2):
            out = os.path.join(tmp, f"p{size}.json")
            mp.spawn(
                _features_worker,
                args=(size, f"file://{tmp}/rendezvous{size}", out, samples, points),
                nprocs=size,
                join=True,
            )
            result = json.loads(Path(out).read_text())
            rows.append(
                {
                    "part": "processes",
                    "processes": size,
                    "threads_each": 1,
                    "samples": samples,
                    "points": points,
                    "seconds": statistics.median(result["seconds"]),
                    "min": min(result["seconds"]),
                    "max": max(result["seconds"]),
                    "checksum": result["checksum"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    rows[-1]["speedup"] = rows[0]["seconds"] / rows[-1]["seconds"]
    rows[-1]["same_features"] = math.isclose(rows[0]["checksum"], rows[-1]["checksum"], rel_tol=1e-9)
    return rows


PARTS = {"n": part_n, "p": part_p, "k": part_k, "m": part_m, "processes": part_processes}


def plot(rows: list[dict], part: str, x_key: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for method in sorted({r["method"] for r in rows if r.get("part") == part}):
        pts = [r for r in rows if r.get("part") == part and r["method"] == method and r["status"] == "ok"]
        for ax, key, label in ((axes[0], "seconds", "fit seconds"), (axes[1], "peak_mb", "fit peak memory (MB)")):
            ax.loglog([r[x_key] for r in pts], [max(r[key] or 1e-3, 1e-3) for r in pts], "o-", label=method)
            ax.set(xlabel=x_key, ylabel=label)
    axes[0].legend()
    fig.suptitle(f"ella fit against {x_key}")
    fig.savefig(path, dpi=100)


def _identity(row: dict) -> tuple:
    """What a row measures (its part, method and sizes), apart from what was measured."""
    return tuple(row.get(key) for key in ("part", "method", "model", "N", "k", "points", "seed", "processes"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cap", type=float, default=1800.0, help="seconds before a KFAC-LLA fit is stopped")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--repeats", type=int, default=3, help="part n: ELLA fits per size (median and spread)")
    parser.add_argument("--models", nargs="+", help="part p: only these networks (e.g. resnet20 resnet18)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("scale_smoke.json" if args.smoke else "scale.json")
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for part in args.parts:
        new = PARTS[part](args, device)  # they replace the earlier rows of the same measurement
        rows = [r for r in rows if _identity(r) not in {_identity(n) for n in new}] + new
        path.write_text(
            json.dumps(
                {"device": str(device), "threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2
            )
        )
    for part, x_key in (("n", "N"), ("p", "P"), ("k", "k"), ("m", "points")):
        if any(r.get("part") == part for r in rows):
            plot(rows, part, x_key, out / f"scale_{part}.png")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
