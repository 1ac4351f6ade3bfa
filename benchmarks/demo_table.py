"""The README's demo tables: written from `ella demo` reports, and checked against a fresh run.

    for i in 1 2 3; do ella demo --quick --no-progress --out quick-$i; done
    python benchmarks/demo_table.py write quick quick-*/report.json     # the README's quick table
    python benchmarks/demo_table.py check quick fresh/report.json       # fails (exit 1) if a fresh run moved

`write` puts one table between the README's ``<!-- demo-quick:start -->`` / ``:end -->`` markers (``full`` for
the demo without ``--quick``): each method's accuracy, NLL and ECE, which must agree across the reports within
`TOLERANCE`, and its prediction cost and the demo's wall time as the median [min, max] over the reports.
`check` reads the table back from the README and fails when a report has other rows, or an accuracy, NLL or ECE
further from the table's than `TOLERANCE`. CI runs `ella demo --quick` and `check quick` on every change.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"cnn": "CNN", "mlp": "MLP (overfit)"}
# How far a fresh run may land from the README: accuracy and ECE in points, NLL relative.
TOLERANCE = {"acc": 0.01, "nll": 0.05, "ece": 0.015}


def split(readme: str, block: str) -> tuple[str, str, str]:
    """The README around its ``block`` table and the table: ``(head with the start marker, table, end marker with
    the tail)``."""
    start, end = f"<!-- demo-{block}:start -->", f"<!-- demo-{block}:end -->"
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    head, rest = readme.split(start, 1)
    table, tail = rest.split(end, 1)
    return head + start, table, end + tail


def spread(values: list[float], fmt: str, unit: str) -> str:
    """``median unit [min, max]`` of repeated measurements (just the median when there is one)."""
    med = fmt.format(statistics.median(values)) + unit
    return med if len(values) == 1 else f"{med} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def rows_of(report: dict) -> dict:
    """A demo report's figures as ``{(model, method): {"acc", "nll", "ece"}}``."""
    return {
        (model, method): {c: row[c] for c in TOLERANCE}
        for model, methods in report["models"].items()
        for method, row in methods.items()
    }


def differences(table: dict, report: dict) -> list[str]:
    """What differs between a table ``{(model, method): {"acc", "nll", "ece"}}`` and a demo report, beyond
    `TOLERANCE`: rows one has and the other lacks, and figures too far apart."""
    rows = rows_of(report)
    problems = [f"{m} / {n}: in the table, not in the run" for m, n in table.keys() - rows.keys()]
    problems += [f"{m} / {n}: in the run, not in the table" for m, n in rows.keys() - table.keys()]
    for key in sorted(table.keys() & rows.keys()):
        want, got = table[key], rows[key]
        for column, tol in TOLERANCE.items():
            gap = abs(got[column] - want[column]) / (want[column] if column == "nll" else 1.0)
            if gap > tol:
                problems.append(
                    f"{key[0]} / {key[1]}: {column} {got[column]:.4f}, table {want[column]:.4f} "
                    f"(tolerance {tol:g}{' relative' if column == 'nll' else ''})"
                )
    return problems


def render(block: str, reports: list[dict]) -> str:
    """The README block for ``reports`` of the same demo (same settings and seed)."""
    first = reports[0]
    for other in reports[1:]:
        problems = differences(rows_of(first), other)
        if problems:
            raise SystemExit("the reports disagree beyond the tolerance:\n  " + "\n  ".join(problems))
    env = first["environment"]
    minutes = spread([r["seconds"] / 60 for r in reports], "{:.1f}", " min")
    command = "ella demo" + (" --quick" if first["quick"] else "")
    lines = [
        f"From `{command}` ({len(reports)} run(s); seed {first['seed']}, {env['threads']} CPU threads, torch "
        f"{env['torch']}, Python {env['python']}; {first['num_test']:,} test points; ECE with "
        f"{env['ece_bins']} bins): the whole demo took {minutes}. Accuracy, NLL and ECE are the same in "
        f"every run; 'predict / MAP' is the prediction time as a multiple of the MAP forward pass (each run: "
        f"the median of 3 timings on 2,000 test inputs, each paired with a MAP forward pass), median [min, max] "
        f"over the runs. Written by `python benchmarks/demo_table.py write {block} ...`.",
        "",
        "| MNIST-1D | method | acc | NLL | ECE | predict / MAP |",
        "|---|---|---|---|---|---|",
    ]
    for model, methods in first["models"].items():
        for method, row in methods.items():
            ratios = [r["models"][model][method]["predict_vs_map"] for r in reports]
            lines.append(
                f"| {MODELS[model]} | {method} | {100 * row['acc']:.2f}% | {row['nll']:.4f} | "
                f"{100 * row['ece']:.2f}% | {spread(ratios, '{:.1f}', 'x')} |"
            )
    return "\n".join(lines)


def read_table(readme: str, block: str) -> dict:
    """The table in the README's ``block``, as ``{(model, method): {"acc", "nll", "ece"}}``."""
    labels = {label: model for model, label in MODELS.items()}
    table = {}
    for line in split(readme, block)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in labels:
            table[labels[cells[0]], cells[1]] = {
                "acc": float(cells[2].rstrip("%")) / 100,
                "nll": float(cells[3]),
                "ece": float(cells[4].rstrip("%")) / 100,
            }
    return table


def write(block: str, reports: list[dict], readme_path: Path) -> None:
    head, _, tail = split(readme_path.read_text(), block)
    readme_path.write_text(f"{head}\n{render(block, reports)}\n{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("block", choices=("quick", "full"), help="the README table: `ella demo --quick` or `ella demo`")
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files written by `ella demo`")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    want_quick = args.block == "quick"
    for path, report in zip(args.reports, reports):
        if report["quick"] != want_quick:
            parser.error(f"{path} is from the {'quick' if report['quick'] else 'full'} demo, not the {args.block} one")
    if args.action == "write":
        write(args.block, reports, args.readme)
        print(f"README.md: {args.block} demo table written from {len(reports)} report(s)")
        return 0
    table = read_table(args.readme.read_text(), args.block)
    failed = False
    for path, report in zip(args.reports, reports):
        problems = differences(table, report)
        print(f"{path}: " + ("matches the README's table" if not problems else "differs from the README's table:"))
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
