"""The package as users install it: commands from ``[project.scripts]`` and ``python -m``, the
recipes shipped inside it, and every package its code imports declared."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from xdistil_ray.config import RECIPES, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_a_recipe_is_named_without_its_folder():
    assert load_config("tiny") == load_config("jobs/configs/tiny.yaml") == load_config(
        os.path.join(RECIPES, "tiny.yaml"))
    assert os.path.realpath(os.path.join(ROOT, "jobs", "configs")) == os.path.realpath(RECIPES)


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_package_is_declared():
    """Third-party modules the package imports (at any depth) come from a distribution that
    pyproject.toml names, as a dependency or in an extra."""
    project = _pyproject()["project"]
    declared = {_distribution(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_distribution(r) for r in extra}
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "xdistil_ray")):
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top in ("xdistil_ray", "__future__"):
                        continue
                    dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                    if not dists & declared:
                        missing.setdefault(top, sorted(dists))
    assert missing == {}, missing


def test_python_dash_m_and_the_job_scripts_are_one_command(tmp_path):
    for argv in (["-m", "xdistil_ray", "train.num_workers=two"],
                 ["-m", "xdistil_ray", "distill", "--config", "tiny", "train.num_workers=two"],
                 ["jobs/distill.py", "--config", "tiny", "train.num_workers=two"]):
        proc = subprocess.run([sys.executable, *argv, f"output={tmp_path}/run"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        assert "train.num_workers: expected an integer" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "xdistil_ray", "finetune", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "xdistil-finetune" in proc.stdout


@pytest.mark.integration
def test_the_built_wheel_installs_its_commands_and_recipes(tmp_path):
    """A wheel built from the tree and installed on its own (the dependencies are this
    environment's): its ``xdistil-distill`` runs from another folder, finds a recipe by name
    and the package's version of the code, not the checkout's."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), ROOT], check=True, timeout=300)
    (wheel,) = wheels.iterdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "import xdistil_ray; print(xdistil_ray.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target))
    proc = subprocess.run([str(target / "bin" / "xdistil-distill"), "--config", "three_stage",
                           "train.num_workers=two", f"output={tmp_path}/run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.num_workers: expected an integer" in proc.stderr, \
        proc.stderr[-2000:]
