"""The run in MLflow (xdistil_ray/report/mlflow_log.py), against a local ``file:`` store."""

import sys

import pytest

from xdistil_ray.report import mlflow_log
from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.run.runfolder import RunFolder

REPORT = {"eval": {"student_accuracy": 0.9, "agreement": 0.95, "dev_rows": 64},
          "speed": {"cpu": {"name": "1 CPU thread", "speedup_latency": 3.0}},
          "size": {"compression": 4.7}}


@pytest.fixture()
def logged(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it
    uri = f"file:{tmp_path}/mlruns"
    cfg = load_config(None, [f"output={tmp_path}/run", f"tracking.mlflow_uri={uri}"])
    run = RunFolder(cfg.output)
    run.write_json("stages/1-representation/losses.json",
                   {"history": [[5, 0.5, 1000.0], [10, 0.25, 1001.0]]})
    run.write_json("report.json", REPORT)
    run.write_text("report.md", "# report\n")
    folders = [("1. representation", "stages/1-representation")]
    first = mlflow_log.log_run(run, cfg, REPORT, folders)
    again = mlflow_log.log_run(run, cfg, REPORT, folders)  # a re-run of the same folder
    return uri, first, again


def test_settings_curves_figures_and_report_land_in_one_mlflow_run(logged):
    import mlflow

    uri, first, again = logged
    assert again == first
    client = mlflow.MlflowClient(uri)
    data = client.get_run(first).data
    assert data.params["student.num_layers"] == "4" and data.params["task"] == "sentence"
    assert data.params["stages.0.name"] == "representation"
    history = client.get_metric_history(first, "1-representation/loss")
    assert [(m.step, m.value) for m in history] == [(5, 0.5), (10, 0.25)]  # not logged twice
    assert data.metrics["eval.student_accuracy"] == 0.9
    assert data.metrics["speed.speedup_latency"] == 3.0 and data.metrics["size.compression"] == 4.7
    names = {a.path for a in client.list_artifacts(first)}
    assert {"report.json", "report.md"} <= names
    assert client.get_run(first).info.status == "FINISHED"


def test_a_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "mlflow" else object())
    with pytest.raises(ConfigError, match=r"tracking.mlflow_uri: .*'mlflow' extra"):
        load_config(None, [f"output={tmp_path}/run", "tracking.mlflow_uri=http://x:5000"])
