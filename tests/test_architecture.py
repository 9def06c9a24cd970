"""The layering of the package: which part of minivlm may import which, no import cycle but the
one between autograd and functional, and the engine getting its array module from
minivlm.backend (autograd, functional, nn and models never import numpy or cupy themselves)."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minivlm"
FORBIDDEN = {"numpy", "cupy", "cupyx"}
BACKEND_ONLY = ("autograd", "functional", "nn", "models", "losses")

# Each part of minivlm (a top-level module or package) and the parts it may import. Data flows
# one way: backend -> autograd -> functional -> nn -> models -> pretrained, eval -> recipes ->
# __main__. The one sanctioned circle is autograd <-> functional: Tensor's operators and methods
# call the ops, and the ops build Tensors.
ENGINE = {"backend", "autograd", "functional"}
ALLOWED = {
    "backend": set(),
    "autograd": {"backend", "functional"},
    "functional": {"backend", "autograd"},
    "nn": ENGINE | {"optim"},            # nn.utils.clip_grad_norm_ is optim's
    "models": ENGINE | {"nn"},
    # The transports (mpi4py, NCCL through CuPy) are known here alone, as the array libraries
    # are in backend: not an engine module, so it may import them (lazily, when launched).
    "distributed": {"backend", "autograd"},
    "losses": ENGINE | {"distributed"},
    "optim": {"backend", "autograd"},
    "io": set(),
    "progress": set(),
    "preprocess": set(),
    "data": set(),
    "tokenizers": {"io"},
    "plots": {"io"},
    "testing": {"backend", "autograd"},
    "cuda": {"backend"},
    "serialization": {"backend", "autograd", "io"},
    "utils": ENGINE,
    "einops_backend": ENGINE | {"nn"},
    "eval": {"backend", "autograd"},
    "pretrained": ENGINE | {"nn", "models", "io"},
    "recipes": ENGINE | {"nn", "models", "losses", "optim", "distributed", "io", "progress",
                         "preprocess", "data", "tokenizers", "plots", "eval", "pretrained",
                         "__init__"},
    "__main__": {"recipes", "distributed"},
    "__init__": ENGINE | {"pretrained", "cuda", "serialization", "einops_backend"},
}
SANCTIONED_CYCLE = ("minivlm.autograd", "minivlm.functional")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name):
    """The minivlm modules that module `name` imports (anywhere in it, functions included):
    `from . import x` names the module x where there is one, else the package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def part(name):
    """minivlm.nn.layers -> 'nn'; minivlm -> '__init__'."""
    return name.split(".")[1] if "." in name else "__init__"


def test_every_part_of_the_package_has_a_place_in_the_layering():
    unplaced = {part(name) for name in MODULES} - ALLOWED.keys()
    assert not unplaced, f"add {sorted(unplaced)} to ALLOWED, with the parts each may import"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layering(name):
    wrong = sorted(target for target in imports(name)
                   if part(target) != part(name) and part(target) not in ALLOWED[part(name)])
    assert not wrong, (f"{name} ({part(name)}) imports {wrong}; {part(name)} may import only "
                       f"{sorted(ALLOWED[part(name)])}")


def strongly_connected_components(graph):
    """Tarjan's algorithm: the sets of nodes that import each other, directly or not."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while not component or node not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(map(sorted, strongly_connected_components(graph))) == [
        ["a", "b", "c"], ["d"], ["e"]]


def test_no_import_cycle_but_autograd_and_functional():
    graph = {name: imports(name) for name in MODULES}
    cycles = [sorted(c) for c in strongly_connected_components(graph) if len(c) > 1]
    allowed = [c for c in cycles if all(name.startswith(SANCTIONED_CYCLE) for name in c)]
    assert cycles == allowed, f"import cycles: {[c for c in cycles if c not in allowed]}"
    assert len(allowed) == 1 and set(SANCTIONED_CYCLE) <= set(allowed[0])


def test_importing_the_library_loads_no_command_tokenizer_plot_or_test_dependency():
    code = ("import sys, minivlm, minivlm.nn, minivlm.models, minivlm.testing, minivlm.optim; "
            "print(sorted(m for m in ('ftfy', 'regex', 'matplotlib', 'PIL', 'hypothesis', "
            "'minivlm.tokenizers', 'minivlm.recipes', 'minivlm.data') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- the engine gets its array module from minivlm.backend ----------------------------------------

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


ENGINE_MODULES = sorted(name for name in MODULES if part(name) in BACKEND_ONLY)


def test_the_engine_modules_are_found():
    assert {"minivlm.autograd", "minivlm.functional", "minivlm.nn.layers",
            "minivlm.models.clip"} <= set(ENGINE_MODULES)


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_imports_no_array_library_directly(name):
    found = forbidden_imports(MODULES[name].read_text(encoding="utf-8"))
    assert not found, (f"{name} imports {found} (line, module): get the array module from "
                       f"minivlm.backend (xp_of, default_xp) instead")
