"""The run in Weights & Biases (xdistil_ray/report/wandb_log.py), in W&B's offline mode: the records
of the run file it writes (what ``wandb sync`` uploads) read back."""

import glob
import json
import struct

import pytest

from xdistil_ray.config import ConfigError
from xdistil_ray.config import load_config
from xdistil_ray.run.runfolder import RunFolder

REPORT = {"eval": {"student_accuracy": 0.9, "agreement": 0.95},
          "speed": {"cpu": {"name": "1 CPU thread", "speedup_latency": 3.0}},
          "size": {"compression": 4.7}}
BLOCK = 32768


def read_records(path: str) -> list:
    """The Records of a W&B run file: its 7-byte header (":W&B", magic, version), then
    LevelDB-log chunks (CRC 4 bytes, length 2, type 1: full, first, middle, last) in 32 KiB
    blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    records, at, pending = [], 7, b""
    while at + 7 <= len(data):
        left = BLOCK - at % BLOCK
        if left < 7:  # the block's tail is padding
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        chunk = data[at + 7:at + 7 + length]
        at += 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_settings_curves_and_figures_in_an_offline_wandb_run(tmp_path, monkeypatch):
    from xdistil_ray.report import wandb_log

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [f"output={tmp_path}/run", "tracking.wandb_project=xdistil-test"])
    run = RunFolder(cfg.output)
    run.write_json("stages/1-representation/losses.json",
                   {"history": [[5, 0.5, 1000.0], [10, 0.25, 1001.0]]})
    run.write_json("report.json", REPORT)
    run_id = wandb_log.log_run(run, cfg, REPORT, [("1. representation",
                                                   "stages/1-representation")])
    assert json.loads(run.read_bytes("tracking/wandb.json"))["run_id"] == run_id
    files = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    assert len(files) == 1, files
    records = read_records(files[0])
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in r.history.item} for r in records if r.HasField("history")]
    curve = [(h["1-representation/step"], h["1-representation/loss"]) for h in history
             if "1-representation/loss" in h]
    assert curve == [(5, 0.5), (10, 0.25)]
    config = {item.key: item.value_json for r in records
              for item in (r.run.config.update if r.HasField("run") else
                           r.config.update if r.HasField("config") else [])}
    assert json.loads(config["student.num_layers"]) == 4
    summary = {item.key: json.loads(item.value_json) for r in records
               if r.HasField("summary") for item in r.summary.update}
    assert summary["eval.student_accuracy"] == 0.9 and summary["size.compression"] == 4.7
    assert any(r.HasField("artifact") and r.artifact.type == "report" for r in records)


def test_a_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "wandb" else object())
    with pytest.raises(ConfigError, match=r"tracking.wandb_project: .*'wandb' extra"):
        load_config(None, [f"output={tmp_path}/run", "tracking.wandb_project=p"])
