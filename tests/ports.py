"""Run real PyTorch files on minivlm with only their import lines changed, in memory.

The rule a user follows: in every import line, `torch` becomes `minivlm` (`import torch` keeps
its name: `import minivlm as torch`), so `import torch.nn.functional as F` reads
`import minivlm.nn.functional as F` and `from einops.layers.torch import Rearrange` reads
`from einops.layers.minivlm import Rearrange`. Nothing else in the file changes.
"""
import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

TORCH_WORD = re.compile(r"(?<![\w.])torch(?=\b)|(?<=\.)torch(?=\b)")


def ported_import_line(line):
    """One import line with torch replaced by minivlm; other lines are returned unchanged."""
    stripped = line.strip()
    if not stripped.startswith(("import ", "from ")) or "torch" not in stripped:
        return line
    if re.fullmatch(r"\s*import torch\s*", line):
        return line.replace("import torch", "import minivlm as torch")
    return TORCH_WORD.sub("minivlm", line)


def port(source):
    """The source with its import lines ported (checked to be import statements by ast)."""
    import_lines = {node.lineno for node in ast.walk(ast.parse(source))
                    if isinstance(node, (ast.Import, ast.ImportFrom))}
    lines = source.splitlines(keepends=True)
    return "".join(ported_import_line(line) if number in import_lines else line
                   for number, line in enumerate(lines, start=1))


def installed_source(package, module):
    """The text of module `module` of the installed `package`, read without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (the README's test command installs it: pip "
                    f"install --no-deps vit-pytorch==1.26.14 coca-pytorch==0.1.0)")
    return (Path(spec.submodule_search_locations[0]) / f"{module}.py").read_text()


def load(name, source):
    """Execute `source` as module `name` (registered in sys.modules, so its own imports of `name`
    find it) and return the module."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module
