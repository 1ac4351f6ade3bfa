"""``ella demo`` end to end on a shortened run: every method, the report's schema and its files."""

import json

import pytest
import torch
from torch.utils.data import DataLoader

from ella_lab import demo
from ella_lab.models import mnist1d_cnn
from ella_lab.train import train_map

from tests.conftest import needs_laplace

METHODS = {"map", "kfac_lla", "last_layer_lla", "ella", "ella_nystrom", "ella_sgd_trajectory", "swa", "swag"}
COLUMNS = {"acc", "nll", "ece", "mce", "brier", "fit_seconds", "predict_seconds", "predict_vs_map"}


def short_cnn(splits, seed=0, progress=True):
    """The reference CNN with a 300-step recipe."""
    model = mnist1d_cnn(splits.num_classes, seed=seed)
    recipe = dict(steps=300, lr=2e-2, weight_decay=1e-4, optimizer="adam", schedule="cosine")
    loader = DataLoader(splits.train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(seed))
    history = train_map(model, loader, seed=seed, progress=False, **recipe)
    history["recipe"] = dict(recipe, batch_size=100)
    return model, history


@pytest.mark.slow
@needs_laplace
def test_demo_writes_the_report_of_every_method(tmp_path, monkeypatch):
    monkeypatch.setitem(demo.TRAINERS, "cnn", short_cnn)
    report = demo.run_demo(
        out=tmp_path,
        models=("cnn",),
        progress=False,
        log=lambda *a: None,
        num_test=300,
        neuralef_steps=30,
        nystrom_points=60,
        laplace_torch_points=5,
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    rows = saved["models"]["cnn"]
    assert set(rows) == METHODS
    for name, row in rows.items():
        assert COLUMNS <= set(row), name
        assert 0 <= row["ece"] <= row["mce"] <= 1 and row["nll"] > 0, name
    assert rows["map"]["acc"] == rows["ella"]["acc"]  # the margin link keeps the MAP's decisions
    assert "laplace_torch_predict_seconds_per_1000" in rows["kfac_lla"]
    assert report["models"]["cnn"]["map"]["nll"] == rows["map"]["nll"]
    assert (tmp_path / "report.md").exists() and list(tmp_path.glob("reliability_*.png"))


def test_without_laplace_torch_the_demo_leaves_its_rows_out(monkeypatch):
    monkeypatch.setattr(demo, "has_laplace_torch", lambda: False)
    methods = demo.methods_for(mnist1d_cnn(), demo.demo_settings(quick=True), seed=0, progress=False)
    assert set(methods) == {"map", "ella", "ella_nystrom"}
