"""The run in MLflow (``tracking.mlflow_uri``): logged by the driver once the report is written.

One MLflow run per run folder: its id is kept in ``<run>/tracking/mlflow.json``, so a re-run of
the same folder logs into the same MLflow run instead of adding one. Logged: the settings
(config.yaml's fields, flattened: ``stages.0.learning_rate``), every training stage's loss at
each logged step (``<stage folder>/loss``, from its ``losses.json``), the report's final figures
(``eval.*``, ``speed.*``, ``size.compression``) and, as artifacts, ``report.json``,
``report.md``, the plots and ``config.yaml``.

mlflow (``mlflow-skinny``) is the ``mlflow`` extra. MLflow 3 refuses its ``file:`` store unless
``MLFLOW_ALLOW_FILE_STORE=true``; a tracking server or Databricks needs nothing more.
"""

from __future__ import annotations

import os
import posixpath
import tempfile

from xdistil_ray.checkpoint import LOSSES_FILE
from xdistil_ray.config import flatten, to_dict
from xdistil_ray.runfolder import RunFolder

EXTRA = "mlflow"
RUN_ID_FILE = "tracking/mlflow.json"
ARTIFACTS = ("report.json", "report.md", "loss_curves.png", "speed_size.png", "config.yaml")
BATCH = 500
"""Metrics and parameters per request (MLflow's limit is 1,000 and 100 per batch)."""


def final_figures(report: dict) -> dict[str, float]:
    """The report's numbers worth comparing runs on, as flat metric names."""
    picked = {"eval": report.get("eval") or {}, "size": {
        "compression": (report.get("size") or {}).get("compression")}}
    speed = (report.get("speed") or {}).get("cpu") or {}
    picked["speed"] = {k: v for k, v in speed.items() if k != "name"}
    return {k: float(v) for k, v in flatten(picked).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_run(run: RunFolder, cfg, report: dict, stage_folders: list[tuple[str, str]]) -> str:
    """Logs the run to ``cfg.tracking.mlflow_uri``; returns the MLflow run id."""
    import mlflow
    from mlflow.entities import Metric, Param

    mlflow.set_tracking_uri(cfg.tracking.mlflow_uri)
    client = mlflow.MlflowClient()
    known = run.read_marker(RUN_ID_FILE) or {}
    run_id = known.get("run_id")
    if run_id is None or known.get("uri") != cfg.tracking.mlflow_uri:
        experiment = mlflow.set_experiment(cfg.tracking.mlflow_experiment)
        name = posixpath.basename(run.uri.rstrip("/")) or "run"
        run_id = client.create_run(experiment.experiment_id, run_name=name,
                                   tags={"xdistil_ray.run_folder": run.uri}).info.run_id
        known = {"run_id": run_id, "uri": cfg.tracking.mlflow_uri, "stages_logged": []}
        run.write_json(RUN_ID_FILE, known)
        params = [Param(k, str(v)[:500]) for k, v in flatten(to_dict(cfg)).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start:start + 100])
    metrics, logged = [], list(known.get("stages_logged", []))
    for _, rel in stage_folders:
        if rel in logged:  # a re-run: its curve is in MLflow already
            continue
        logged.append(rel)
        history = run.read_json(posixpath.join(rel, LOSSES_FILE))["history"]
        key = f"{posixpath.basename(rel)}/loss"
        metrics += [Metric(key, float(loss), int(1000 * row[2]) if len(row) > 2 else 0,
                           int(step)) for row in history for step, loss in [row[:2]]]
    metrics += [Metric(k, v, 0, 0) for k, v in final_figures(report).items()]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + BATCH])
    with tempfile.TemporaryDirectory() as tmp:
        for name in ARTIFACTS:
            if run.exists(name):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(run.read_bytes(name))
        client.log_artifacts(run_id, tmp)
    client.set_terminated(run_id)
    run.write_json(RUN_ID_FILE, {**known, "stages_logged": logged})
    return run_id
