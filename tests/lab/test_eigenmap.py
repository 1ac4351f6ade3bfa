"""The graph experiment of ``ella eigenmap``: its figures, file and plot, at a small size."""

import json

import pytest

from ella_lab.eigenmap import run_graph_eigenmap

from tests.conftest import is_png


def test_a_small_block_model_gives_the_exact_eigenvectors_and_writes_its_report(tmp_path):
    result = run_graph_eigenmap(tmp_path, nodes=200, blocks=4, features=8, k=4, steps=600, seeds=[0], progress=False)
    saved = json.loads((tmp_path / "eigenmap.json").read_text())
    assert saved["settings"]["nodes"] == 200 and len(saved["runs"]) == 1 and is_png(tmp_path / "eigenmap.png")
    run = result["runs"][0]
    assert min(run["embedding"]["cosine"]) >= 0.95 and run["embedding"]["eigenvalue_error"] < 0.02
    assert set(run["probe"]) == {"exact", "raw_features", "embedding", "features_mlp"}
    assert result["median"]["embedding"]["min_cosine"][0] == min(run["embedding"]["cosine"])
    with pytest.raises(ValueError, match="`k` = 5 exceeds `blocks` = 4"):
        run_graph_eigenmap(tmp_path, nodes=200, blocks=4, k=5, seeds=[0], progress=False)
