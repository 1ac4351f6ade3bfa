"""Run methods side by side on one data set and write what a person reads: tables, JSON, diagrams."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .metrics import ECE_BINS, classification_metrics, predict_all, regression_metrics, reliability_diagrams

COLUMNS = ("acc", "nll", "ece", "mce", "brier", "fit_seconds", "predict_seconds")
REPORT_VERSION = 1


def run_method(method, train_loader, val_loader, test_loader, progress: bool = False):
    """Fit ``method`` (timed), predict on ``test_loader`` (timed) and score it.

    Returns ``(row, predictions, targets)``; ``row`` has the metrics plus ``fit_seconds`` (with the
    method's ``setup_seconds``, if any) and ``predict_seconds`` (time inside ``predict`` only), and the
    method's ``link`` if it has one.
    """
    start = time.perf_counter()
    method.fit(train_loader, val_loader)
    fit_seconds = time.perf_counter() - start + getattr(method, "setup_seconds", 0.0)  # e.g. a recorded run
    method.predict(next(iter(test_loader))[0][:8])  # warm-up: first-call allocations are not timed
    preds, targets, predict_seconds = predict_all(method, test_loader, "test_loader", progress)
    if getattr(method, "likelihood", "classification") == "regression":
        row = regression_metrics(*preds, targets)
    else:
        row = classification_metrics(preds, targets)
    row.update(fit_seconds=fit_seconds, predict_seconds=predict_seconds, n=len(targets))
    for extra in ("link", "prior_precision"):
        value = getattr(method, extra, None)
        if isinstance(value, (int, float, str)):
            row[extra] = value
    return row, preds, targets


def markdown_table(rows: dict[str, dict], columns=COLUMNS, baseline: str | None = "map") -> str:
    """A markdown table, one row per method; with ``baseline``, predict time also as a ratio to it."""
    header = ["method", *columns]
    ratio = baseline in rows and "predict_seconds" in columns
    if ratio:
        header.append("predict / map")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        cells = [name] + [_fmt(c, row.get(c)) for c in columns]
        if ratio:
            cells.append(f"{row['predict_seconds'] / rows[baseline]['predict_seconds']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "ece_bins": ECE_BINS}


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
