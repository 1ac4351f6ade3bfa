"""Run methods side by side on one data set and write what a person reads: tables, JSON, diagrams."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ella import batches
from ella.methods import predict_all
from ella.metrics import ECE_BINS, metrics_of

from .plots import reliability_diagrams

COLUMNS = ("acc", "nll", "ece", "mce", "brier", "fit_seconds", "predict_seconds")
REPORT_VERSION = 1


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start, None


def run_method(method, train_loader, val_loader, test_loader, progress: bool = False, timer=None):
    """Fit ``method`` (timed), predict on ``test_loader`` (timed) and score it.

    Returns ``(row, predictions, targets)``; ``row`` has the metrics plus ``fit_seconds`` (with the
    method's ``setup_seconds``, if any), ``predict_seconds`` (time inside ``predict`` only) and ``n``, and the
    method's ``link``, ``prior_precision``, ``temperature``, ``num_folded``, ``residual`` (ELLA's choice) and
    ``stage_seconds`` where it has them. With
    ``timer(fn, *args) -> (result, seconds, peak_bytes or None)`` (e.g. :func:`ella_lab.compare.cost.measure`)
    the calls are timed by it and the row also has ``fit_peak_mb`` and ``predict_peak_mb``.
    """
    measure = timer or _timed
    _, fit_seconds, fit_peak = measure(method.fit, train_loader, val_loader)
    method.predict(batches.take(batches.split_batch(next(iter(test_loader)))[0], slice(0, 8)))  # warm-up
    (preds, targets, predict_seconds), _, predict_peak = measure(
        predict_all, method, test_loader, "test_loader", progress
    )
    row = metrics_of(preds, targets, method.likelihood)
    row.update(
        fit_seconds=fit_seconds + method.setup_seconds,  # e.g. a recorded run
        predict_seconds=predict_seconds,
        n=len(targets),
    )
    if timer is not None:
        row.update(
            fit_peak_mb=None if fit_peak is None else fit_peak / 2**20,
            predict_peak_mb=None if predict_peak is None else predict_peak / 2**20,
        )
    for extra in ("link", "prior_precision_", "temperature_", "num_folded_", "residual_"):
        value = getattr(method, extra, None)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            row[extra.rstrip("_")] = value
    if isinstance(getattr(method, "stage_seconds_", None), dict):  # where a linearised fit's time went
        row["stage_seconds"] = dict(method.stage_seconds_)
    return row, preds, targets


def markdown_table(rows: dict[str, dict], columns=COLUMNS, baseline: str | None = "map") -> str:
    """A markdown table, one row per method; with ``baseline``, predict time also as a ratio to it (a row's own
    ``predict_vs_map`` where it has one, a timing of repeated calls)."""
    header = ["method", *columns]
    ratio = baseline in rows and "predict_seconds" in columns
    if ratio:
        header.append("predict / map")
    lines = []
    for name, row in rows.items():
        cells = [name] + [_fmt(c, row.get(c)) for c in columns]
        if ratio:
            ratio_to_map = row.get("predict_vs_map", row["predict_seconds"] / rows[baseline]["predict_seconds"])
            cells.append(f"{ratio_to_map:.1f}x")
        lines.append(cells)
    return table(header, lines)


def table(header: list[str], lines: list[list[str]]) -> str:
    """A markdown table from a header and rows of cells."""
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(rows + ["| " + " | ".join(cells) + " |" for cells in lines])


def _fmt(column: str, value) -> str:
    if value is None:
        return "-"
    if column in ("acc", "ece", "mce"):
        return f"{100 * value:.2f}%"
    if column.endswith("seconds"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def environment() -> dict:
    """Versions and threads, so that every figure says where it came from."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "ece_bins": ECE_BINS,
    }


def write_report(report: dict, out_dir, diagrams: dict[str, dict] | None = None, title: str = "ella") -> Path:
    """Write ``report.json``, ``report.md`` and one reliability-diagram PNG per model into ``out_dir``.

    Args:
        report: ``{"models": {model: {method: row}}, ...}``.
        diagrams: ``{model: {method: (probs, labels)}}`` for the reliability diagrams.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"version": REPORT_VERSION, **report}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    parts = [f"# {title}\n", f"ECE and MCE: {ECE_BINS} equal-width bins, top-label confidence.\n"]
    for model, rows in report["models"].items():
        parts += [f"## {model}\n", markdown_table(rows), ""]
        if diagrams and model in diagrams:
            reliability_diagrams(diagrams[model], out / f"reliability_{model}.png", title=model)
            parts.append(f"![reliability diagrams of {model}](reliability_{model}.png)\n")
    (out / "report.md").write_text("\n".join(parts))
    return out


RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"  # (in a clone of the repository)


def benchmark_parser(doc: str, threads: int = 1, repeats: int | None = None) -> argparse.ArgumentParser:
    """The arguments every benchmark script shares: ``--threads`` (CPU threads, set by :func:`parse_benchmark`),
    ``--out`` (the results folder) and, with a default number, ``--repeats``. ``doc`` is the script's docstring,
    whose first paragraph describes it."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=threads, help=f"CPU threads (default: {threads})")
    parser.add_argument("--out", default=str(RESULTS), help="the results folder (default: benchmarks/results)")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help=f"repeats (default: {repeats})")
    return parser


def parse_benchmark(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The parsed arguments, with torch's CPU threads set to ``--threads``."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
