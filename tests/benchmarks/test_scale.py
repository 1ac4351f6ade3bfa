"""benchmarks/scale.py at smoke sizes: every part runs and writes its rows; two processes compute the same
features as one."""

import json

from benchmarks import scale
from tests.conftest import is_png


def test_smoke_run_of_the_k_and_processes_parts(tmp_path):
    assert scale.main(["--smoke", "--parts", "k", "processes", "--out", str(tmp_path), "--threads", "1"]) == 0
    rows = json.loads((tmp_path / "scale_smoke.json").read_text())["rows"]
    ks = [r for r in rows if r["part"] == "k"]
    assert [r["k"] for r in ks] == [3, 6] and all(r["status"] == "ok" and r["peak_mb"] is not None for r in ks)
    processes = [r for r in rows if r["part"] == "processes"]
    assert [r["processes"] for r in processes] == [1, 2] and processes[1]["same_features"]
    assert is_png(tmp_path / "scale_k.png")
    assert all(set(r["stages"]) == {"survey", "features", "curvature", "search"} for r in ks)
