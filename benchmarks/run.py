"""The benchmark: every method on every problem, side by side, against exact LLA where it exists.

    python benchmarks/run.py                       # all problems -> benchmarks/results/, README table
    python benchmarks/run.py --data-root ~/data    # also the torchvision data sets found there
    python benchmarks/run.py --quick --out /tmp/b  # a small smoke run (README untouched)

Writes ``results.json`` (the demo's ``report.json`` schema plus ``shift``, ``ood``, ``fidelity``, ...),
``results.md``, reliability diagrams, shift curves and the toy regression's predictive bands into ``--out``,
then ``README_table.md`` (the headline table and the project's targets, each marked held or missed) and, unless
``--no-readme``, puts that table into README.md between the markers below. A method that raises stops the
run with a non-zero exit status and its name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ella_lab.compare.benchmark import ALL_PROBLEMS, run_benchmark
from ella_lab.compare.driver import MethodFailed
from ella_lab.compare.methods import Settings
from ella_lab.compare.report import headline_table
from ella_lab.data.images import IMAGE_DATASETS

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"


def saved(name: str) -> dict | None:
    """The result another benchmark wrote to ``benchmarks/results/<name>.json``, if it has run: ``exact_mlp``
    (exact LLA of the overfitting MNIST-1D MLP, too large for this run), ``fit_speed`` (repeated fits of
    ``ella_neuralef`` and ``laplace_torch_ella``), ``small`` (the small tabular problems)."""
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def saved_targets(results: dict) -> list[tuple[str, bool | None, str]]:
    """:func:`targets` with the results the other benchmarks saved."""
    return targets(results, (saved("small") or {}).get("rows", []), saved("exact_mlp"), saved("fit_speed"))


def targets(
    results: dict, small: list[dict] = (), exact: dict | None = None, fits: dict | None = None
) -> list[tuple[str, bool | None, str]]:
    """The targets ELLA is held to, as ``(statement, held, evidence)``; ``held`` is None for a figure stated
    without a target. ``small``, ``exact``, ``fits``: the results of ``benchmarks/small.py``, ``exact_mlp.py`` and
    ``fit_speed.py`` (the fit-time target is the median of its repeats where it has run, else the table's one fit)."""
    out = []
    for row in small:
        out.append(
            (
                f"defaults fit in <= 2 s within 2% of the exact eigendecomposition's NLL ({row['table']}, "
                f"N = {row['N']}, P = {row['P']})",
                row["fit_seconds"] <= 2 and abs(row["nll_gap"]) <= 0.02,
                f"{row['fit_seconds']:.2f} s, NLL gap {100 * row['nll_gap']:+.2f}% (benchmarks/small.py)",
            )
        )
    cnn, mlp = "mnist1d_cnn", "mnist1d_mlp"
    rows, fid = results["models"].get(cnn, {}), results["fidelity"].get(cnn, {})
    nef = rows.get("ella_neuralef")
    if nef and "exact_lla" in rows:
        gap = fid["ella_neuralef"]["nll_gap_rel"]
        out.append(
            (
                "ella_neuralef predicts at <= 1.5x the MAP forward pass with NLL within 1% of exact_lla (MNIST-1D CNN)",
                nef["predict_vs_map"] <= 1.5 and abs(gap) <= 0.01,
                f"{nef['predict_vs_map']:.2f}x, NLL gap {100 * gap:+.2f}%",
            )
        )
        for other in ("kfac_lla", "diag_lla", "laplace_torch_ella"):
            if other in fid:
                mine, theirs = abs(fid["ella_neuralef"]["nll_gap"]), abs(fid[other]["nll_gap"])
                out.append(
                    (
                        f"ella_neuralef closer to exact_lla in NLL than {other}",
                        mine < theirs,
                        f"|gap| {mine:.4f} vs {theirs:.4f}",
                    )
                )
    mlp_nef = results["models"].get(mlp, {}).get("ella_neuralef")
    if mlp_nef and exact:
        gap = mlp_nef["nll"] / exact["rows"]["exact_lla"]["nll"] - 1
        out.append(
            (
                "ella_neuralef predicts at <= 2x the MAP forward pass with NLL within 3% of exact LLA "
                "(MNIST-1D MLP; exact LLA from benchmarks/exact_mlp.py)",
                mlp_nef["predict_vs_map"] <= 2 and abs(gap) <= 0.03,
                f"{mlp_nef['predict_vs_map']:.2f}x, NLL gap {100 * gap:+.2f}%",
            )
        )
    if fits:
        speed = fits["speedup"]
        out.append(
            (
                f"ella_neuralef fits >= 10x faster than laplace_torch_ella (MNIST-1D CNN, median of "
                f"{fits['repeats']} repeats)",
                speed["median"] >= 10,
                f"{speed['median']:.1f}x [{speed['min']:.1f}, {speed['max']:.1f}] "
                f"({fits['seconds']['ella_neuralef']['median']:.1f} s vs "
                f"{fits['seconds']['laplace_torch_ella']['median']:.1f} s; benchmarks/fit_speed.py)",
            )
        )
    elif nef and "laplace_torch_ella" in rows:
        lt = rows["laplace_torch_ella"]
        speed = lt["fit_seconds"] / nef["fit_seconds"]
        out.append(
            (
                "ella_neuralef fits >= 10x faster than laplace_torch_ella (MNIST-1D CNN)",
                speed >= 10,
                f"{speed:.1f}x ({nef['fit_seconds']:.1f} s vs {lt['fit_seconds']:.1f} s)",
            )
        )
    if nef and "kfac_lla" in rows:
        speed = rows["kfac_lla"]["predict_vs_map"] / nef["predict_vs_map"]
        out.append(("ella_neuralef predicts >= 50x faster than kfac_lla (MNIST-1D CNN)", speed >= 50, f"{speed:.0f}x"))
    for key in (cnn, mlp):
        for set_name, by_method in results["ood"].get(key, {}).items():
            reference = by_method.get("exact_lla", {}).get("auroc")
            if reference is None and key == mlp and exact:
                reference = exact["ood"][set_name]["exact_lla"]
            if reference is None:
                continue
            for method in ("ella_neuralef_residual", "ella_neuralef"):
                if method in by_method:
                    auroc = by_method[method]["auroc"]
                    held = abs(auroc - reference) <= 0.02 if method == "ella_neuralef_residual" else None
                    out.append(
                        (
                            f"OOD AUROC ({key}, {set_name}): {method}"
                            + (" within 0.02 of exact LLA" if held is not None else ", distance to exact LLA"),
                            held,
                            f"{auroc:.4f} vs {reference:.4f} ({auroc - reference:+.4f})",
                        )
                    )
    return out


def readme_table(results: dict, command: str, out: str = "benchmarks/results") -> str:
    env = results["environment"]
    lines = [
        f"Generated by `{command}` (torch {env['torch']}, {env['threads']} CPU thread(s), seed "
        f"{results['seed']}; {results['link']} link for every Gaussian predictive; ECE with "
        f"{results['ece_bins']} bins). 'predict / MAP' is the prediction time as a multiple of the MAP "
        "forward pass (median of 3 timings on 2,000 test inputs, each paired with a MAP forward pass; the "
        "spread is in results.md); 'NLL gap to exact' and 'var. rel. err' compare with the exact full-GGN LLA "
        "on the "
        f"same network; AUROC uses the predictive entropy. Full tables: `{out}/results.md`.\n",
        headline_table(results),
        "**Targets**\n",
        "| target | held | measured |",
        "|---|---|---|",
    ]
    for statement, held, evidence in saved_targets(results):
        lines.append(f"| {statement} | {'yes' if held else 'no' if held is not None else '(stated)'} | {evidence} |")
    for key, reason in results.get("skipped", {}).items():
        lines.append(f"\n{key}: skipped ({reason})")
    return "\n".join(lines) + "\n"


def insert_into_readme(table: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the text between the benchmark markers of ``readme`` by ``table``."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--data-root", default=None, help="folder with torchvision data set files")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--problems", nargs="+", default=None, help="dataset:model pairs, e.g. mnist1d:cnn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes, README untouched")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    problems = [tuple(p.split(":")) for p in args.problems] if args.problems else list(ALL_PROBLEMS)
    if args.problems is None and args.data_root:
        problems += [(name, "cnn") for name in IMAGE_DATASETS]
    elif args.problems is None:
        print("torchvision data sets: skipped (no --data-root given; ella never downloads them)")
    sizes = dict(num_test=2000, shift_points=300, ood_points=500, fidelity_points=500) if args.quick else {}
    settings = Settings(neuralef_steps=200, ntk_samples=200) if args.quick else Settings()
    start = time.perf_counter()
    try:
        results = run_benchmark(
            problems,
            out=args.out,
            methods=args.methods,
            settings=settings,
            seed=args.seed,
            data_root=args.data_root,
            threads=args.threads,
            progress=not args.no_progress,
            **sizes,
        )
    except MethodFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    command = "python benchmarks/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    out = Path(args.out)
    shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    table = readme_table(results, command.strip(), str(shown))
    (out / "README_table.md").write_text(table)
    (out / "targets.json").write_text(
        json.dumps([dict(target=s, held=h, measured=e) for s, h, e in saved_targets(results)], indent=2)
    )
    print(table)
    print(f"benchmark finished in {time.perf_counter() - start:.0f} s; results in {out}/")
    if not (args.quick or args.no_readme):
        insert_into_readme(table)
        print("README.md table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
