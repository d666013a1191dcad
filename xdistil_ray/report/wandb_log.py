"""The run in Weights & Biases (``tracking.wandb_project``): logged by the driver once the
report is written.

One W&B run per run folder: its id is kept in ``<run>/tracking/wandb.json`` and the run resumed
on a re-run of the folder. Logged: the settings (config.yaml's fields, flattened) as the run's
config, every training stage's loss at each logged step (``<stage folder>/loss`` against its own
step axis, ``<stage folder>/step``), the report's final figures in the run's summary, and the
report files as an artifact (type ``report``). ``WANDB_MODE=offline`` writes the run locally
(under ``WANDB_DIR``, default the working directory) for a later ``wandb sync``; credentials come
from W&B's own sources (``WANDB_API_KEY``, ``~/.netrc``), never the config.

wandb is the ``wandb`` extra.
"""

from __future__ import annotations

import os

from xdistil_ray.report import tracking
from xdistil_ray.config import flatten
from xdistil_ray.config import to_dict
from xdistil_ray.run.runfolder import RunFolder

EXTRA = "wandb"
RUN_ID_FILE = tracking.record_file("wandb")


def log_run(run: RunFolder, cfg, report: dict, stage_folders: list[tuple[str, str]]) -> str:
    """Logs the run to W&B project ``cfg.tracking.wandb_project``; returns the W&B run id."""
    import wandb

    known = run.read_object(RUN_ID_FILE) or {}
    if known.get("project") != cfg.tracking.wandb_project:
        known = {}
    logged = list(known.get("stages_logged", []))
    session = wandb.init(project=cfg.tracking.wandb_project,
                         entity=cfg.tracking.wandb_entity or None, name=tracking.run_name(run),
                         id=known.get("run_id"), resume="allow" if known else None,
                         config=flatten(to_dict(cfg)), dir=os.environ.get("WANDB_DIR"),
                         tags=["xdistil_ray"], notes=run.uri,
                         settings=wandb.Settings(silent=True, console="off"))
    try:
        run.write_json(RUN_ID_FILE, {"run_id": session.id, "project": cfg.tracking.wandb_project,
                                     "stages_logged": logged})
        for rel, prefix, history in tracking.new_curves(run, stage_folders, logged):
            session.define_metric(f"{prefix}/step")
            session.define_metric(f"{prefix}/loss", step_metric=f"{prefix}/step")
            for row in history:
                session.log({f"{prefix}/step": int(row[0]), f"{prefix}/loss": float(row[1])})
            logged.append(rel)
        session.summary.update(tracking.final_figures(report))
        artifact = wandb.Artifact(f"report-{session.id}", type="report")
        with tracking.report_files(run) as folder:
            artifact.add_dir(folder)
            session.log_artifact(artifact)  # copied into W&B's staging area here
        run_id = session.id
    finally:
        session.finish()
    run.write_json(RUN_ID_FILE, {"run_id": run_id, "project": cfg.tracking.wandb_project,
                                 "stages_logged": logged})
    return run_id
