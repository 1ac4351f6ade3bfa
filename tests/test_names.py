"""The name lists: torch-free, and the one source of what the library and the command line accept."""

import subprocess
import sys

from ella import names
from ella.eigen import REGISTRY
from ella_lab import cli
from ella_lab import eigen as lab_eigen


def test_the_names_import_nothing():
    code = "import sys, ella.names\nprint('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_every_named_solver_is_registered_and_the_command_lines_names_are_the_librarys():
    assert set(names.SOLVERS) <= set(REGISTRY)
    assert set(lab_eigen.SOLVERS) <= set(names.SOLVERS)
    assert cli.LINKS is names.LINKS
