"""docs/slides.md maps the lecture's slides to files and functions: every file it names exists
and every name it gives after a file is defined there (a class, a function, a constant, or a
method as Class.method)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLIDES = REPO / "docs" / "slides.md"
# `path/to/file.py: name` then `name`s in the same cell, up to the next file or the cell's end
REFERENCE = re.compile(r"`((?:minivlm|reference|benchmarks)/[\w/]+\.py)"
                       r"(?:: ([\w.]+)(?:\([^`]*\))?)?`((?:, `[\w.]+(?:\([^`]*\))?`)*)")


def defined_names(path):
    """Top-level names of a module, and Class.method for its classes' functions."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{item.name}" for item in node.body
                          if isinstance(item, ast.FunctionDef)}
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return names


def references():
    """(file, name or None) for every reference of the map."""
    for match in REFERENCE.finditer(SLIDES.read_text(encoding="utf-8")):
        path, first, rest = match.groups()
        names = ([first] if first else []) + re.findall(r"`([\w.]+)", rest)
        yield from ((path, name) for name in names) if names else [(path, None)]


def test_every_file_and_name_of_the_slide_map_exists():
    found = list(references())
    assert len(found) > 100                              # the map was read, not skipped
    missing = [f"{path}: {name}" for path, name in found
               if not (REPO / path).is_file()
               or name is not None and name not in defined_names(REPO / path)]
    assert not missing, missing
