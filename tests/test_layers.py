"""The package's layers: each subpackage imports only from those below it, and no module
imports itself back through others. Read from the source (every import statement, those inside
functions too), so a late import that reaches up fails here as a top-level one does."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "xdistil_ray")

LAYERS = ["errors", "run", "config", "observe", "tasks", "modeling", "distill", "data",
          "teacher", "student", "export", "evaluate", "report", "pipelines", "__main__"]
"""Lowest first, then the pipeline's steps in the order they run (the student is exported
before it is evaluated, and the report reads both), the jobs, and ``python -m xdistil_ray``.
``run`` (storage, the run folder, its layout, the step runner) sits under ``config``, which
checks URIs and builds storage options with it. ``distill`` (the stages, and the training
machinery they run on: losses, worker loop, checkpoints) sits under the steps before it, as
the teacher's fine-tune trains with it too."""


def _modules() -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of statements under ``if TYPE_CHECKING:`` (types only, never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, inner.end_lineno + 1))
    return lines


def _imports(path: str, modules: dict[str, str]) -> list[tuple[int, str, bool]]:
    """(line, imported module of the package, at module level) of each import in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    skip = _type_checking_only(tree)
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "xdistil_ray"):
            # "from xdistil_ray.run import storage": the module storage, not the package
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                       else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("xdistil_ray")]
        else:
            continue
        out.extend((node.lineno, t, id(node) in top) for t in targets)
    return out


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_subpackage_has_a_layer():
    found = {_layer(m) for m in _modules() if m.count(".") >= 1}
    assert found == set(LAYERS), found ^ set(LAYERS)


def test_no_import_reaches_up():
    modules = _modules()
    up = []
    for module, path in sorted(modules.items()):
        if module == "xdistil_ray":
            continue
        mine = LAYERS.index(_layer(module))
        for line, target, _ in _imports(path, modules):
            if target != "xdistil_ray" and LAYERS.index(_layer(target)) > mine:
                up.append(f"{os.path.relpath(path, PACKAGE)}:{line} imports {target}")
    assert up == [], "\n".join(up)


def test_no_import_circles():
    """Module-level imports only: a cycle there is an import-order accident waiting."""
    modules = _modules()
    graph = {m: sorted({t for _, t, top in _imports(p, modules) if top and t in modules} - {m})
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(n):] + [n]))
            if n not in state:
                visit(n, trail + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_the_checks_see_a_late_import_that_reaches_up(tmp_path):
    """The reading catches what the tests above rely on: an import inside a function."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from xdistil_ray.pipelines import distill\n"
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from xdistil_ray.report import step\n")
    modules = _modules()
    assert [(line, t) for line, t, _ in _imports(str(path), modules)] == [
        (2, "xdistil_ray.pipelines.distill")]
