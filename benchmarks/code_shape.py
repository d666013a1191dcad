"""The package's shape at two revisions: modules per package, the largest module and function,
functions over 60 lines, lines that compare a task's name, README lines.

    python benchmarks/code_shape.py [--base REV] [--head REV]

Each revision is read from git (``git archive``), so the working tree is not touched. The ratio
column is head / base.
"""

import argparse
import ast
import io
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_tasks import NAMED  # noqa: E402 - the suite's own definition of a named task


def _files(rev: str) -> dict[str, str]:
    """Path -> text of the package's modules and the README at ``rev``."""
    data = subprocess.run(["git", "archive", rev, "xdistil_ray", "README.md"], cwd=ROOT,
                          capture_output=True, check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and (member.name.endswith(".py") or member.name == "README.md"):
                out[member.name] = tar.extractfile(member).read().decode("utf-8")
    return out


def shape(rev: str) -> dict:
    files = _files(rev)
    modules = {p: t for p, t in files.items() if p.endswith(".py")}
    packages: dict[str, int] = {}
    functions = []
    for path, text in modules.items():
        parts = path.split("/")
        package = parts[1] if len(parts) > 2 else "(top)"
        packages[package] = packages.get(package, 0) + 1
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path}:{node.name}"))
    lines = {p: t.count("\n") for p, t in modules.items()}
    largest = max(lines, key=lines.get)
    named = sum(1 for t in modules.values() for line in t.splitlines()
                if NAMED.search(line.split("#")[0]))
    return {"modules": len(modules), "packages": packages,
            "lines": sum(lines.values()), "largest module": (lines[largest], largest),
            "largest function": max(functions), "functions over 60 lines":
                sum(1 for n, _ in functions if n > 60),
            "task-name comparisons": named, "README lines": files["README.md"].count("\n")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="fa238b0")
    parser.add_argument("--head", default="HEAD")
    args = parser.parse_args()
    base, head = shape(args.base), shape(args.head)
    print(f"{'':28s} {args.base:>24s} {args.head:>24s}  ratio")
    for key in ("modules", "lines", "largest module", "largest function",
                "functions over 60 lines", "task-name comparisons", "README lines"):
        b, h = base[key], head[key]
        bn, hn = (b[0], h[0]) if isinstance(b, tuple) else (b, h)
        print(f"{key:28s} {bn:>24} {hn:>24}  {hn / bn if bn else float('nan'):.2f}")
        if isinstance(b, tuple):
            print(f"{'':28s} {b[1][-24:]:>24s} {h[1][-24:]:>24s}")
    names = sorted(set(base["packages"]) | set(head["packages"]))
    print("modules per package (base -> head): " + ", ".join(
        f"{n} {base['packages'].get(n, 0)}->{head['packages'].get(n, 0)}" for n in names))


if __name__ == "__main__":
    main()
