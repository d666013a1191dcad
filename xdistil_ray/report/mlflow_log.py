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

from xdistil_ray.report import tracking
from xdistil_ray.config import flatten
from xdistil_ray.config import to_dict
from xdistil_ray.run.runfolder import RunFolder

EXTRA = "mlflow"
RUN_ID_FILE = tracking.record_file("mlflow")
BATCH = 500
"""Metrics per request (MLflow's limit is 1,000; parameters go 100 at a time)."""


def log_run(run: RunFolder, cfg, report: dict, stage_folders: list[tuple[str, str]]) -> str:
    """Logs the run to ``cfg.tracking.mlflow_uri``; returns the MLflow run id."""
    import mlflow
    from mlflow.entities import Metric, Param

    mlflow.set_tracking_uri(cfg.tracking.mlflow_uri)
    client = mlflow.MlflowClient()
    known = run.read_object(RUN_ID_FILE) or {}
    run_id = known.get("run_id")
    if run_id is None or known.get("uri") != cfg.tracking.mlflow_uri:
        experiment = mlflow.set_experiment(cfg.tracking.mlflow_experiment)
        run_id = client.create_run(experiment.experiment_id, run_name=tracking.run_name(run),
                                   tags={"xdistil_ray.run_folder": run.uri}).info.run_id
        known = {"run_id": run_id, "uri": cfg.tracking.mlflow_uri, "stages_logged": []}
        run.write_json(RUN_ID_FILE, known)
        params = [Param(k, str(v)[:500]) for k, v in flatten(to_dict(cfg)).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start:start + 100])
    logged = list(known.get("stages_logged", []))
    metrics = []
    for rel, prefix, history in tracking.new_curves(run, stage_folders, logged):
        logged.append(rel)
        metrics += [Metric(f"{prefix}/loss", float(row[1]),
                           int(1000 * row[2]) if len(row) > 2 else 0, int(row[0]))
                    for row in history]
    metrics += [Metric(k, v, 0, 0) for k, v in tracking.final_figures(report).items()]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + BATCH])
    with tracking.report_files(run) as folder:
        client.log_artifacts(run_id, folder)
    client.set_terminated(run_id)
    run.write_json(RUN_ID_FILE, {**known, "stages_logged": logged})
    return run_id
