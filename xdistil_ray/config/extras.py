"""The project's optional extras (pyproject.toml): which packages each needs, checked where a
setting asks for them, with a message that names the extra and how to do without."""

from __future__ import annotations

import importlib.util

from xdistil_ray.errors import ConfigError

EXTRAS = {
    "onnx": (("onnx", "onnxscript", "onnxruntime"), "export.onnx", "the ONNX export",
             "set export.onnx=false"),
    "mlflow": (("mlflow",), "tracking.mlflow_uri", "logging to MLflow",
               "leave tracking.mlflow_uri empty"),
    "wandb": (("wandb",), "tracking.wandb_project", "logging to Weights & Biases",
              "leave tracking.wandb_project empty"),
}
"""extra -> (its packages, the setting that needs them, what for, how to do without)."""


def require(extra: str) -> None:
    """Raises ConfigError naming the setting, the missing packages and ``extra`` when any of
    ``extra``'s packages is not installed."""
    packages, field, why, without = EXTRAS[extra]
    missing = [name for name in packages if _missing(name)]
    if missing:
        raise ConfigError(
            f"{field}: {why} needs {', '.join(missing)}, from the project's '{extra}' extra: "
            f"pip install -c constraints.txt -e '.[{extra}]' (scripts/setup.sh installs it), "
            f"or {without}")


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or half there
        return True
