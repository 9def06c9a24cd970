"""The engine and everything built on it get their array module from minivlm.backend: autograd,
functional, nn and models never import numpy or cupy themselves (DESIGN.md, principle 1)."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "minivlm"
BACKEND_ONLY = [PACKAGE / "autograd.py", PACKAGE / "functional.py",
                *sorted(PACKAGE.glob("nn/**/*.py")), *sorted(PACKAGE.glob("models/**/*.py"))]
FORBIDDEN = {"numpy", "cupy", "cupyx"}


def forbidden_imports(source):
    """(line, module) for every import of numpy or cupy (or a submodule) in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split(".")[0] in FORBIDDEN]
    return found


def test_the_check_finds_direct_imports_and_allows_the_backend():
    source = "\n".join([
        "import numpy as np",
        "import math, cupy",
        "from numpy.lib import stride_tricks",
        "import cupyx.scipy.special",
        "from . import backend",
        "from .backend import xp_of",
        "from .numpy import thing",  # a sibling module that happens to be called numpy
        "def f():",
        "    import numpy",
    ])
    assert forbidden_imports(source) == [
        (1, "numpy"), (2, "cupy"), (3, "numpy.lib"), (4, "cupyx.scipy.special"), (9, "numpy")]


def test_the_engine_files_are_found():
    assert {PACKAGE / "autograd.py", PACKAGE / "functional.py"} <= set(BACKEND_ONLY)
    assert all(path.exists() for path in BACKEND_ONLY)


@pytest.mark.parametrize("path", BACKEND_ONLY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_no_array_library_directly(path):
    found = forbidden_imports(path.read_text(encoding="utf-8"))
    assert not found, (f"{path.relative_to(PACKAGE.parent)} imports {found} (line, module): get "
                       f"the array module from minivlm.backend (xp_of, default_xp) instead")
