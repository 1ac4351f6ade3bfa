"""benchmarks/demo_table.py: the README's demo tables are written from demo reports and a fresh run is checked
against them."""

import copy
import json
from pathlib import Path

import pytest

from benchmarks import demo_table

ROOT = Path(__file__).resolve().parents[2]


def report(seconds=60.0, ratio=1.8):
    row = dict(acc=0.9484, nll=0.1927, ece=0.0269, predict_vs_map=1.0)
    return {
        "quick": True,
        "seed": 0,
        "num_test": 2000,
        "seconds": seconds,
        "environment": {"threads": 2, "torch": "2.14.1", "python": "3.11.7", "ece_bins": 15},
        "models": {
            "cnn": {"map": row, "ella_neuralef": dict(row, nll=0.1558, ece=0.0069, predict_vs_map=ratio)},
            "mlp": {"map": dict(row, acc=0.6484, nll=3.2058, ece=0.2939)},
        },
    }


@pytest.fixture
def readme(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("intro\n<!-- demo-quick:start -->\nold\n<!-- demo-quick:end -->\nrest\n")
    return path


def save(tmp_path, name, rep):
    path = tmp_path / name
    path.write_text(json.dumps(rep))
    return str(path)


def test_written_table_reads_back_and_a_run_like_it_passes_the_check(tmp_path, readme):
    runs = [
        save(tmp_path, f"r{i}.json", report(seconds=s, ratio=r))
        for i, (s, r) in enumerate([(60, 1.82), (66, 2.0), (63, 1.67)])
    ]
    assert demo_table.main(["write", "quick", *runs, "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "took 1.1 min [1.0, 1.1]" in text  # 63 s [60, 66] of wall time
    assert "| CNN | ella_neuralef | 94.84% | 0.1558 | 0.69% | 1.8x [1.7, 2.0] |" in text
    table, exact = demo_table.read_table(text, "quick"), demo_table.rows_of(report())
    assert set(table) == set(exact)
    for key, row in exact.items():
        assert table[key] == pytest.approx(row, abs=1e-4)  # the README rounds
    assert demo_table.main(["check", "quick", runs[0], "--readme", str(readme)]) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["models"]["cnn"]["ella_neuralef"].update(nll=0.1558 * 1.06), "nll"),  # 6% > 5%
        (lambda r: r["models"]["cnn"]["map"].update(acc=0.9484 - 0.011), "acc"),  # 1.1 points > 1
        (lambda r: r["models"]["mlp"]["map"].update(ece=0.2939 + 0.016), "ece"),  # 1.6 points > 1.5
        (lambda r: r["models"]["mlp"].update(swag=dict(r["models"]["mlp"]["map"])), "not in the table"),
        (lambda r: r["models"]["cnn"].pop("ella_neuralef"), "not in the run"),
    ],
)
def test_check_fails_when_a_run_moves_beyond_the_tolerance_or_has_other_rows(tmp_path, readme, change, message, capsys):
    demo_table.main(["write", "quick", save(tmp_path, "r.json", report()), "--readme", str(readme)])
    moved = copy.deepcopy(report())
    change(moved)
    assert demo_table.main(["check", "quick", save(tmp_path, "moved.json", moved), "--readme", str(readme)]) == 1
    assert message in capsys.readouterr().out


def test_within_the_tolerance_passes_and_disagreeing_reports_are_refused(tmp_path, readme):
    demo_table.main(["write", "quick", save(tmp_path, "r.json", report()), "--readme", str(readme)])
    near = report()
    near["models"]["cnn"]["ella_neuralef"]["nll"] *= 1.04
    assert demo_table.main(["check", "quick", save(tmp_path, "near.json", near), "--readme", str(readme)]) == 0
    far = report()
    far["models"]["cnn"]["map"]["acc"] = 0.90
    with pytest.raises(SystemExit, match="disagree"):
        demo_table.main(
            [
                "write",
                "quick",
                save(tmp_path, "a.json", report()),
                save(tmp_path, "b.json", far),
                "--readme",
                str(readme),
            ]
        )


def test_the_readme_holds_the_quick_demo_table_ci_checks():
    table = demo_table.read_table((ROOT / "README.md").read_text(), "quick")
    assert {model for model, _ in table} == {"cnn", "mlp"}
    assert {("cnn", "map"), ("cnn", "ella"), ("mlp", "map"), ("mlp", "ella")} <= set(table)
