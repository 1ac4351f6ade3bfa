"""The ``ella`` command: arguments and the output folder are checked before any work; --help loads no torch."""

import json
import subprocess
import sys

import pytest

from ella_lab import cli


def run_fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2  # argparse's usage error, not a traceback
    return capsys.readouterr().err


def test_help_and_version_answer_without_importing_torch():
    code = (
        "import sys\nfrom ella_lab import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'ella.methods' in sys.modules, 'ella_lab.compare' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False False")
    assert "--version" in out and "demo" in out and "compare" in out and "eigen" in out
    version = subprocess.run([sys.executable, "-m", "ella_lab.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.strip().startswith("ella ")


def test_a_command_without_the_lab_packages_names_the_extra(tmp_path):
    code = (
        "import sys\nsys.modules['matplotlib'] = None  # as if the lab extra were not installed\n"
        "from ella_lab import cli\n"
        f"sys.exit(cli.main(['demo', '--quick', '--no-progress', '--out', {str(tmp_path / 'out')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "`ella demo` needs matplotlib, which is not installed: pip install 'ella[lab]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--threads", "0"], "--threads: expected a positive integer"),
        (["demo", "--seed", "-1"], "--seed: expected a non-negative integer"),
        (["eigen", "--k", "two"], "--k: expected a positive integer"),
        (["eigen", "--kernel", "laplace"], "invalid choice"),
        (["compare", "--dataset", "imagenet"], "--dataset: expected one of"),
        (["compare", "--dataset", "mnist1d", "--model", "resnet"], "--model: for mnist1d expected one of"),
        (["compare", "--dataset", "mnist1d", "--methods", "ella", "magic"], "--methods: unknown ['magic']"),
        (["compare", "--dataset", "mnist", "--data-root", "/no/such/folder"], "--data-root /no/such/folder"),
        (["compare", "--dataset", "mnist1d", "--link", "logit"], "invalid choice"),
        (["demo", "--out", ""], "--out: expected a folder name, got an empty string"),
        (["eigen", "--solver", "nystrom", "--k", "9", "--num-points", "5"], "--k 9: at most --num-points (5)"),
        (["eigen", "--k", "9", "--num-train", "5"], "--k 9: at most --num-train (5)"),
        (["eigenmap", "--k", "9"], "--k 9: at most --blocks (8)"),
        (["eigenmap", "--nodes", "50", "--blocks", "8"], "--nodes 50: at least 10 per block"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr("ella_lab.compare.compare", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr("ella_lab.demo.run_demo", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr("ella_lab.eigen.experiment.run_eigen_experiment", lambda *a, **k: pytest.fail("work started"))
    assert message in run_fails(argv, capsys)


def test_a_compare_that_compared_nothing_exits_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "ella_lab.compare.compare",
        lambda *a, **k: {"models": {}, "skipped": {"mnist": "no files under --data-root"}},
    )
    assert cli.main(["compare", "--dataset", "mnist1d", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "skipped mnist: no files" in captured.out and "nothing was compared" in captured.err


def test_an_existing_report_is_kept_unless_overwrite(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("ella_lab.demo.run_demo", lambda **kwargs: calls.append(kwargs))
    (tmp_path / "report.json").write_text(json.dumps({"models": {}}))
    assert "already holds report.json; pass --overwrite" in run_fails(["demo", "--out", str(tmp_path)], capsys)
    assert calls == [] and json.loads((tmp_path / "report.json").read_text()) == {"models": {}}
    assert cli.main(["demo", "--out", str(tmp_path), "--overwrite", "--quick", "--threads", "1"]) == 0
    assert calls[0]["quick"] and calls[0]["out"] == str(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "exists and is not a folder" in run_fails(["demo", "--out", str(blocker)], capsys)
