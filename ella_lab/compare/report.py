"""Write a comparison: ``results.json``, ``results.md``, reliability diagrams, shift curves, regression bands.

``results.json`` extends the demo's ``report.json`` schema (``{"models": {problem: {method: row}}}``, rows
with ``acc``, ``nll``, ``ece``, ``mce``, ``brier``, ``fit_seconds``, ``predict_seconds``, ...) with the
sections ``shift``, ``ood``, ``fidelity``, ``not_applicable`` and ``problems``, each keyed by problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ella.metrics import ECE_BINS

from ..plots import regression_bands, reliability_diagrams, shift_curves
from ..report import environment, markdown_table, table

__all__ = ["assemble", "write_results", "markdown", "headline_table", "RESULTS_VERSION"]

RESULTS_VERSION = 1
SECTIONS = ("shift", "ood", "fidelity", "not_applicable")
QUALITY = ("acc", "nll", "ece", "mce", "brier")


def assemble(sections: dict[str, dict], settings: dict, env: dict | None = None, **meta) -> dict:
    """The results document from ``{problem key: section}`` (:func:`ella_lab.compare.driver.compare_problem`);
    ``env`` is :func:`ella_lab.report.environment` taken during the run (its thread count)."""
    out = {
        "version": RESULTS_VERSION,
        "kind": "ella-compare",
        "environment": env or environment(),
        "settings": settings,
        "link": settings.get("link"),
        "ece_bins": ECE_BINS,
        **meta,
        "models": {},
        "problems": {},
    }
    out.update({name: {} for name in SECTIONS})
    for key, section in sections.items():
        out["models"][key] = section["rows"]
        for name in SECTIONS:
            out[name][key] = section[name]
        out["problems"][key] = {k: v for k, v in section.items() if k not in ("rows", *SECTIONS)}
    return out


def _f(value, kind: str = "num") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "x":
        return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"
    if kind == "s":
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    if kind == "mb":
        return f"{value:.1f}"
    if kind == "range":  # [min, max] of a ratio
        return f"[{_f(value[0], 'x')}, {_f(value[1], 'x')}]" if None not in value else "-"
    return f"{value:.4f}"


def _cost(rows: dict) -> str:
    cols = (
        ("fit_seconds", "s"),
        ("fit_vs_map_forward", "x"),
        ("predict_seconds_per_1000", "s"),
        ("predict_vs_map", "x"),
        ("predict_vs_map_range", "range"),
        ("fit_peak_mb", "mb"),
        ("fit_memory_vs_map", "x"),
        ("predict_peak_mb", "mb"),
        ("predict_memory_vs_map", "x"),
    )
    header = [
        "method",
        "fit s",
        "fit / MAP pass",
        "predict s / 1000",
        "predict / MAP (median of 3)",
        "predict / MAP [min, max]",
        "fit peak MB",
        "fit mem / MAP",
        "predict peak MB",
        "predict mem / MAP",
    ]
    return table(header, [[m, *[_f(r.get(c), k) for c, k in cols]] for m, r in rows.items()])


def _fidelity(fid: dict) -> str:
    lines = [
        [m, _f(e["nll_gap"]), _f(e["nll_gap_rel"], "pct"), _f(e.get("var_rel_err")), _f(e.get("var_ratio"))]
        for m, e in fid.items()
    ]
    return table(["method", "NLL - exact", "NLL gap", "variance rel. error", "variance ratio"], lines)


def _shift(curve: dict, metric: str) -> str:
    methods = list(curve)
    levels = [p["level"] for p in curve[methods[0]]]
    kind = "pct" if metric in ("ece", "acc") else "num"
    return table(
        ["method", *[f"{level:g}" for level in levels]],
        [[m, *[_f(p.get(metric), kind) for p in curve[m]]] for m in methods],
    )


def _ood(ood: dict) -> str:
    sets = list(ood)
    methods = list(ood[sets[0]])
    header = ["method", *[f"AUROC {s}" for s in sets], *[f"max-p {s}" for s in sets], "max-p test"]
    lines = [
        [
            m,
            *[_f(ood[s][m]["auroc"]) for s in sets],
            *[_f(ood[s][m]["mean_max_prob"]) for s in sets],
            _f(ood[sets[0]][m]["in_distribution_mean_max_prob"]),
        ]
        for m in methods
    ]
    return table(header, lines)


def markdown(results: dict, title: str = "ella compare") -> str:
    """The human-readable report of a results document."""
    parts = [
        f"# {title}\n",
        f"Every method runs on the same MAP network and the same data splits; every tuned hyperparameter "
        f"uses the same validation set. Gaussian predictives use the **{results.get('link')}** link. ECE/MCE: "
        f"{results['ece_bins']} equal-width bins, top-label confidence. Costs: one process, "
        f"{results['environment']['threads']} thread(s); ratios are to the MAP forward pass (fit: one pass "
        f"over the training inputs; predict and memory: per 1,000 test inputs).\n",
    ]
    for key, rows in results["models"].items():
        prob = results["problems"][key]
        regression = prob["likelihood"] == "regression"
        parts += [
            f"## {key}\n",
            f"P = {prob['num_params']:,} weights; {prob['num_train']:,} train / "
            f"{prob['num_val']:,} validation / {prob['num_test']:,} test points; MAP trained in "
            f"{prob['map_training']['seconds']:.0f} s.\n",
            markdown_table(rows, ("nll", "rmse") if regression else QUALITY, baseline=None),
            "",
        ]
        for name, reason in results["not_applicable"].get(key, {}).items():
            parts.append(f"- `{name}`: not applicable: {reason}")
        parts += ["", "### Cost\n", _cost(rows), ""]
        if results["fidelity"].get(key):
            parts += [
                f"### Fidelity to exact_lla (variances on the first {prob['fidelity_points']:,} test points)\n",
                _fidelity(results["fidelity"][key]),
                "",
            ]
        for curve, data in results["shift"].get(key, {}).items():
            for metric in ("nll", "ece", "acc"):
                if metric in next(iter(data.values()))[0]:
                    parts += [f"### Shift: {curve}, {metric}\n", _shift(data, metric), ""]
        if results["ood"].get(key):
            parts += [
                "### Out of distribution (AUROC of the predictive entropy; mean max-probability)\n",
                _ood(results["ood"][key]),
                "",
            ]
        for image in results.get("figures", {}).get(key, []):
            parts.append(f"![{image}]({image})")
        parts.append("")
    return "\n".join(parts)


def headline_table(results: dict) -> str:
    """The README table: quality, cost, fidelity and OOD per problem and method."""
    parts = []
    for key, rows in results["models"].items():
        fid, ood = results["fidelity"].get(key, {}), results["ood"].get(key, {})
        regression = results["problems"][key]["likelihood"] == "regression"
        header = ["method", "NLL"] + ([] if regression else ["ECE", "acc"]) + ["fit s", "predict / MAP"]
        header += ["NLL gap to exact", "var. rel. err"] if fid else []
        header += [f"AUROC {s}" for s in ood]
        lines = []
        for m, r in rows.items():
            cells = [m, _f(r["nll"])] + ([] if regression else [_f(r["ece"], "pct"), _f(r["acc"], "pct")])
            cells += [_f(r["fit_seconds"], "s"), _f(r.get("predict_vs_map"), "x")]
            if fid:
                e = fid.get(m)
                cells += (
                    ["(reference)", "(reference)"]
                    if m == "exact_lla"
                    else ([_f(e["nll_gap_rel"], "pct"), _f(e.get("var_rel_err"))] if e else ["-", "-"])
                )
            cells += [_f(ood[s][m]["auroc"]) if m in ood[s] else "-" for s in ood]
            lines.append(cells)
        parts += [f"**{key}** (P = {results['problems'][key]['num_params']:,})\n", table(header, lines), ""]
    return "\n".join(parts)


def _toy_truth(x: np.ndarray) -> np.ndarray:
    from ..data import toy_function

    return toy_function(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def write_results(
    results: dict,
    out_dir,
    artefacts: dict[str, dict] | None = None,
    splits: dict | None = None,
    title: str = "ella compare",
) -> Path:
    """Write ``results.json``, ``results.md`` and the figures (reliability diagrams and shift curves per
    classification problem, predictive bands per regression problem) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for key, art in (artefacts or {}).items():
        names = []
        if results["problems"][key]["likelihood"] == "classification" and art["preds"]:
            reliability_diagrams(
                {m: (p, art["targets"]) for m, p in art["preds"].items()}, out / f"reliability_{key}.png", title=key
            )
            names.append(f"reliability_{key}.png")
        elif art["preds"] and splits and key in splits:
            s = splits[key]
            truth = _toy_truth if results["problems"][key]["dataset"] == "toy" else None
            regression_bands(
                s.test.tensors[0].numpy(),
                art["preds"],
                out / f"bands_{key}.png",
                train=tuple(t.numpy() for t in s.train.tensors),
                truth=truth,
                title=f"{key}: predictive mean +-2 std (with observation noise)",
            )
            names.append(f"bands_{key}.png")
        if results["shift"].get(key):
            shift_curves(results["shift"][key], out / f"shift_{key}.png", title=key)
            names.append(f"shift_{key}.png")
        figures[key] = names
    results = {**results, "figures": figures}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results, title))
    return out
