"""benchmarks/bad_input.py: every bad input of the table gets a clear answer before any long work."""

import pytest

from benchmarks import bad_input
from tests.conftest import needs_laplace


@pytest.mark.parametrize(
    "description, fn",
    [pytest.param(d, fn, id=d, marks=needs_laplace if fn.needs == "laplace" else ()) for d, fn in bad_input.CASES],
)
def test_every_case_is_answered_clearly_and_early(description, fn):
    kind, message, ok = bad_input.run_case(fn)
    assert ok, f"{description}: {kind}: {message}"
    assert kind in ("error", "usage error", "warning", "handled", "exit status 1") and message


def test_the_watch_sees_long_work_and_a_silent_case_fails():
    from ella.kernels import EmpiricalNTK

    from tests.conftest import tiny_mlp

    def late(tmp):
        def action():
            EmpiricalNTK(tiny_mlp(), num_samples=4, progress=False).features(bad_input.torch.zeros(2, 3).double())
            raise ValueError("too late")

        return action

    assert bad_input.run_case(late) == ("error after the long work", "ValueError: too late", False)
    assert bad_input.run_case(lambda tmp: lambda: None) == ("silent", "", False)
