"""What the experiment trackers (mlflow_log.py, wandb_log.py) log of a finished run, read from
its run folder: the stages' loss curves not logged yet, the final figures, the report files.

Each tracker keeps its own record in ``<run>/tracking/<tracker>.json`` (its run's id, the stage
folders already logged), so a re-run of the folder logs into the same tracked run without
logging a curve twice."""

from __future__ import annotations

import os
import posixpath
from contextlib import contextmanager
from tempfile import TemporaryDirectory

from xdistil_ray.run import layout
from xdistil_ray.distill.checkpoint import LOSSES_FILE
from xdistil_ray.config import flatten
from xdistil_ray.run.runfolder import RunFolder

ARTIFACTS = (layout.REPORT_JSON, layout.REPORT_MD, layout.LOSS_PLOT, layout.SPEED_PLOT, layout.CONFIG)


def record_file(tracker: str) -> str:
    return f"tracking/{tracker}.json"


def run_name(run: RunFolder) -> str:
    return posixpath.basename(run.uri.rstrip("/")) or "run"


def final_figures(report: dict) -> dict[str, float]:
    """The report's numbers worth comparing runs on, as flat metric names."""
    picked = {"eval": report.get("eval") or {}, "size": {
        "compression": (report.get("size") or {}).get("compression")}}
    speed = (report.get("speed") or {}).get("cpu") or {}
    picked["speed"] = {k: v for k, v in speed.items() if k != "name"}
    return {k: float(v) for k, v in flatten(picked).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def new_curves(run: RunFolder, stage_folders: list[tuple[str, str]], logged: list[str]
               ) -> list[tuple[str, str, list]]:
    """(folder, metric prefix: the folder's last name, history rows [step, loss, time]) of each
    stage folder not in ``logged``."""
    return [(rel, posixpath.basename(rel),
             run.read_json(posixpath.join(rel, LOSSES_FILE))["history"])
            for _, rel in stage_folders if rel not in logged]


@contextmanager
def report_files(run: RunFolder):
    """A local folder holding the run's report files (those there are)."""
    with TemporaryDirectory() as tmp:
        for name in ARTIFACTS:
            if run.exists(name):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(run.read_bytes(name))
        yield tmp
