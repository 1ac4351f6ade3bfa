"""The layers point one way: importing the core loads no method, no experiment and no laplace-torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["ella", "ella.kernels", "ella.eigen", "ella.posterior", "ella.trajectory", "ella.metrics"]
)
def test_the_core_imports_nothing_above_it(module):
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ella.methods', 'ella_lab', 'ella_lab.cli', "
        "'laplace', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_methods_import_no_experiment():
    code = (
        "import sys, ella.methods\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ella_lab', 'ella_lab.cli', 'laplace'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # laplace-torch too is imported only when a baseline is built


@pytest.mark.parametrize("name", ["KFACLLA", "DiagLLA", "LastLayerLLA", "LastLayerKFAC", "LaplaceTorchELLA"])
def test_a_laplace_torch_baseline_without_laplace_torch_names_the_extra_to_install(name, monkeypatch):
    import ella.methods

    from tests.conftest import tiny_mlp

    monkeypatch.setitem(sys.modules, "laplace", None)  # as if laplace-torch were not installed
    with pytest.raises(
        ImportError,
        match=rf"{name} needs laplace-torch, which is not installed: "
        r"pip install 'ella\[laplace\]'",
    ):
        getattr(ella.methods, name)(tiny_mlp(), progress=False)
