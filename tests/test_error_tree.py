"""Every exception class lives in its tree's one module, read from the source (no import
needed): the product's (components, pipelines, cli) in ``components/errors.py``, whose
``__all__`` names each of them once, in the literal — nothing appended elsewhere; the
local stack's own in ``localstack/errors.py``, beside the API error type it answers with
(``localstack/api_errors.py``). A new exception class anywhere else fails here, named."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("components", "pipelines", "cli", "demo")
HOMES = {"components": "components/errors.py", "pipelines": "components/errors.py", "cli": "components/errors.py",
         "demo": "components/errors.py", "localstack": "localstack/errors.py"}
LOCALSTACK_API_ERRORS = {"localstack/api_errors.py": {"ApiError"}}
BUILTIN = {name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)}


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _classes() -> dict[str, list[tuple[str, str, list[str]]]]:
    """top-level package → [(file, class, base names)] of every class in its source."""
    found: dict[str, list[tuple[str, str, list[str]]]] = {}
    for package in HOMES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    found.setdefault(package, []).append(
                        (path.relative_to(REPO).as_posix(), node.name, [_base_name(b) for b in node.bases]))
    return found


def _exceptions(classes: list[tuple[str, str, list[str]]]) -> list[tuple[str, str]]:
    """(file, class) of the exception classes: a builtin exception, a foreign one (its
    name says Error/Exception), or one of these, among its bases."""
    known = set(BUILTIN)
    changed = True
    while changed:
        changed = False
        for _file, name, bases in classes:
            if name not in known and any(b in known or b.endswith(("Error", "Exception")) for b in bases):
                known.add(name)
                changed = True
    return [(file, name) for file, name, _bases in classes if name in known]


def test_every_exception_class_is_in_its_trees_errors_module() -> None:
    elsewhere = []
    for package, classes in _classes().items():
        for file, name in _exceptions(classes):
            if file != HOMES[package] and name not in LOCALSTACK_API_ERRORS.get(file, set()):
                elsewhere.append(f"{file}: {name}")
    assert not elsewhere, f"exception classes outside their tree's errors module: {elsewhere}"


def test_the_product_tree_declares_each_class_once_in_its_all() -> None:
    tree = ast.parse((REPO / "components/errors.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assigned = [n for n in tree.body if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    assert len(assigned) == 1, "__all__ is assigned once"
    declared = [ast.literal_eval(e) for e in assigned[0].value.elts]  # type: ignore[attr-defined]
    assert sorted(declared) == sorted(defined) and len(declared) == len(set(declared))
    patched = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
               and n.value.id == "__all__"]
    assert not patched, "__all__ is changed after it is written (append/extend)"
    doc = ast.get_docstring(tree) or ""
    assert all(name in doc for name in defined), "the tree in the docstring names every class"
