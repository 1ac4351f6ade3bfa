"""The documentation: the code on its pages runs and checks what the pages say, and the site builds without warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of a page, in order."""
    return PYTHON_BLOCK.findall((DOCS / page).read_text())


def run_page(page: str) -> dict:
    """Run every python block of ``page`` in one namespace, in order; a failing block is named in the error."""
    namespace: dict = {"__name__": f"docs.{page}"}
    blocks = python_blocks(page)
    assert blocks, f"{page} has no python code blocks"
    torch.manual_seed(0)
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page} (python block {i + 1})", "exec"), namespace)
    return namespace


def test_python_blocks_are_found():
    blocks = python_blocks("laplace-torch.md")
    assert len(blocks) >= 4 and blocks[0].startswith("import torch")


@pytest.mark.filterwarnings("ignore:By default `link_approx`:UserWarning")  # laplace-torch's reminder
def test_laplace_torch_page_runs(tmp_path, monkeypatch):
    pytest.importorskip("laplace")
    monkeypatch.chdir(tmp_path)
    ns = run_page("laplace-torch.md")
    # what the page shows: laplace-torch and ella's KFAC-LLA agree, and ELLA drops in for it
    probs, probs_lt, probs_ella = ns["probs"], ns["probs_lt"], ns["probs_ella"]
    assert probs.shape == probs_lt.shape == probs_ella.shape == (len(ns["x_test"]), 3)
    assert torch.allclose(probs, probs_lt, atol=1e-4)
    assert torch.allclose(probs_ella.sum(dim=1), torch.ones(len(probs_ella)), atol=1e-5)
    assert ns["kfac"].search_ is not None and ns["post"].prior_precision_ > 0


def test_index_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the quick start saves its posterior to the working directory
    ns = run_page("index.md")
    assert (tmp_path / "post.pt").is_file()
    assert torch.allclose(ns["loaded"].predict(ns["x"]), ns["probs"])
    assert set(ns["report"]) >= {"acc", "nll", "ece", "mce", "brier"}


def test_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")  # the theme
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (site / "index.html").is_file() and (site / "api" / "methods" / "index.html").is_file()
