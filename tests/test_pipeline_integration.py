"""The whole pipeline on a tiny config: real Ray on CPU, the real teacher, real files."""

import glob
import json
import re
import os
import subprocess
import sys
import tempfile

import pytest

from xdistil_ray.config import ConfigError, load_config
from xdistil_ray.embedded_data import write_embedded_data

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NASTY_LINES = [
    b"", b"   ", b"\t\r", b"crlf line\r", b"bad \xff byte", b"nul \x00 byte",
    "Привет, это отзыв".encode(), "这是一个评论".encode(), "هذا تعليق".encode(), "emoji 🎉🎉".encode(),
    b"long " + b"word " * 200_000,  # a 1 MB line
    b"dup line", b"dup line", b"dup line",
]
# 14 lines: kept 8 (crlf, 4 scripts, long, dup once), dropped: empty 1, whitespace_only 2,
# invalid_utf8 1, nul_byte 1, duplicate 2.
NASTY_DROPPED = {"empty": 1, "whitespace_only": 2, "invalid_utf8": 1, "nul_byte": 1, "duplicate": 2}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = write_embedded_data(str(root / "inputs"), seed=1, num_train=384, num_dev=96,
                               num_corpus=700)
    corpus_dir = root / "corpus"
    corpus_dir.mkdir()
    os.rename(data["corpus"], corpus_dir / "reviews.txt")
    (corpus_dir / "nasty.txt").write_bytes(b"\n".join(NASTY_LINES))
    overrides = [f"output={root}/run", f"corpus.path={corpus_dir}",
                 f"labeled.train={data['train']}", f"labeled.dev={data['dev']}"]
    cfg = load_config("jobs/configs/tiny.yaml", overrides)
    workdirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "xdistil-*")))
    # As a user runs it: the job script, its own local Ray, its console.
    done = subprocess.run([sys.executable, "jobs/distill.py", "--config", "jobs/configs/tiny.yaml",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "xdistil-*"))) - workdirs
    report = json.loads((root / "run" / "report.json").read_text())
    return root, cfg, report, overrides, left, done


def test_the_console_shows_the_projects_lines_only(tiny_run):
    """Steps starting and done, progress every 10 s, the summary; Ray's, Ray Data's,
    DeepSpeed's, transformers' and the workers' output is in <run>/logs/."""
    root, _, report, _, _, done = tiny_run
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("[xdistil] ") for line in lines), lines
    assert done.stderr == ""
    # Progress: at most one line per 10 s per pass or stage, plus its last one; everything else
    # (steps starting and done, shard commits, the run and logs folders, the summary) is a
    # fixed set: 28 lines measured, with 16 progress lines of 6 labels over a 350 s run (44 in
    # all; the console printed every Ray, Ray Data, DeepSpeed and worker line before).
    progress = [line for line in lines if re.search(r"\d (rows|steps)/s", line)]
    labels = {line.split(":")[0] for line in progress}
    assert len(progress) <= len(labels) + report["seconds"] / 10, progress
    assert len(lines) - len(progress) <= 35, lines
    for step in ("data", "teacher_finetune", "teacher", "student_init", "stages/1-representation",
                 "stages/2-logits", "stages/3-labels", "student", "eval"):
        assert f"[xdistil] {step}: running" in lines
        assert any(line.startswith(f"[xdistil] {step}: done in ") for line in lines), step
    logs = sorted(p.name for p in (root / "run" / "logs").iterdir())
    assert [n.split("-")[0] for n in logs] == ["driver", "workers"]
    workers = (root / "run" / "logs" / logs[1]).read_text()
    assert "RayTrainWorker" in workers and "LOAD REPORT" in workers


def test_every_row_accounted_for(tiny_run):
    root, _, report, *_ = tiny_run
    d = report["data"]
    generated = 700 + 7 + 1  # embedded corpus: 700 unique, 1% repeated, 1 empty line
    assert d["input_rows"] == generated + len(NASTY_LINES)
    assert d["input_rows"] == d["kept"] + sum(d["dropped"].values())
    expected = dict(NASTY_DROPPED)
    expected["duplicate"] += 7
    expected["empty"] += 1
    assert d["dropped"] == expected
    assert d["truncated"] == 1  # the 1 MB line
    assert report["teacher_inference"]["rows"] == d["kept"]
    on_disk = json.loads((root / "run" / "report.json").read_text())
    assert on_disk["data"] == d


def test_stages_train_and_losses_fall(tiny_run):
    _, cfg, report, *_ = tiny_run
    assert [s["name"] for s in report["stages"]] == [s.name for s in cfg.stages]
    for stage in report["stages"]:
        assert stage["steps"] > 0
        assert stage["final_loss"] < stage["first_loss"], stage


def test_report_has_required_figures(tiny_run):
    _, _, report, _, _, _ = tiny_run
    assert report["student"]["params"] < report["teacher"]["params"] / 3
    assert 0.0 <= report["eval"]["agreement"] <= 1.0
    assert report["eval"]["heldout_rows"] > 0
    assert 0.5 < report["eval"]["teacher_accuracy"] <= 1.0
    assert report["speed"]["cpu"]["speedup_latency"] > 1.0
    assert report["speed"]["cpu"]["speedup_throughput"] > 1.0
    assert report["size"]["student_disk_bytes"] < report["size"]["teacher_disk_bytes"] / 3
    assert report["teacher"]["finetuned"] is True


def test_exported_student_loads_with_auto_classes_and_pipeline(tiny_run):
    root, _, report, _, _, _ = tiny_run
    from transformers import AutoModelForSequenceClassification, pipeline

    folder = str(root / "run" / "student")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    assert set(model.config.id2label.values()) == set(report["data"]["label_names"])
    out = pipeline("text-classification", model=folder, tokenizer=folder)("The battery is great")
    assert out[0]["label"] in report["data"]["label_names"]


def test_second_run_skips_complete_steps(tiny_run, ray_local, capsys):
    import time

    from xdistil_ray import pipeline

    _, _, report, overrides, *_ = tiny_run
    start = time.time()
    again = pipeline.run(load_config("jobs/configs/tiny.yaml", overrides))
    assert time.time() - start < 30
    assert "complete, skipped" in capsys.readouterr().out
    assert again["stages"] == report["stages"] and again["eval"] == report["eval"]


def test_unsafe_config_change_is_refused(tiny_run):
    from xdistil_ray import pipeline

    _, _, _, overrides, *_ = tiny_run
    cfg = load_config("jobs/configs/tiny.yaml", overrides + ["student.num_layers=3"])
    with pytest.raises(ConfigError, match="student.num_layers"):
        pipeline.run(cfg)


def test_training_workers_leave_no_temporary_folders(tiny_run):
    *_, left, _ = tiny_run
    assert not left, left


def _heldout_rows(run_dir, limit):
    """The held-out rows the evaluation reads: the teacher's committed parts in marker order."""
    import pyarrow.parquet as pq

    from xdistil_ray.runfolder import RunFolder

    ids, logits = [], []
    for name in RunFolder(run_dir).marker("teacher")["files"]:
        table = pq.read_table(os.path.join(run_dir, "teacher", name),
                              columns=["input_ids", "logits", "heldout"])
        table = table.filter(table.column("heldout"))
        ids += table.column("input_ids").to_pylist()
        logits += table.column("logits").to_pylist()
    return ids[:limit], logits[:limit]


def test_report_figures_match_the_exported_student(tiny_run):
    """Agreement, KL and dev accuracy recomputed with the public Hugging Face API from the
    exported folder, one sentence at a time (no padding), against what the report says."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, pipeline

    from xdistil_ray import metrics

    root, cfg, report, _, _, _ = tiny_run
    run_dir = str(root / "run")
    folder = os.path.join(run_dir, "student")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids, stored = _heldout_rows(run_dir, cfg.eval.max_heldout_rows)
    with torch.no_grad():
        student = [model(input_ids=torch.tensor([row])).logits[0].numpy() for row in ids]
    teacher = [np.asarray(row, dtype=np.float32) for row in stored]
    e = report["eval"]
    assert e["heldout_rows"] == len(ids)
    assert e["agreement"] == pytest.approx(metrics.agreement(teacher, student, 2), abs=1.5 / len(ids))
    assert e["kl_divergence"] == pytest.approx(metrics.kl_divergence(teacher, student, 2),
                                               rel=0.02, abs=1e-4)
    assert sum(p.numel() for p in model.parameters()) == report["size"]["student_params"]

    dev = [json.loads(line) for line in open(cfg.labeled.dev, encoding="utf-8")]
    classify = pipeline("text-classification", model=folder, tokenizer=folder)
    predicted = classify([row["text"] for row in dev], truncation=True,
                         max_length=cfg.corpus.max_length, batch_size=32)
    accuracy = np.mean([p["label"] == str(row["label"]) for p, row in zip(predicted, dev)])
    assert e["dev_rows"] == len(dev)
    assert e["student_accuracy"] == pytest.approx(accuracy, abs=1.5 / len(dev))

    md = (root / "run" / "report.md").read_text()
    assert f"{100 * e['agreement']:.1f}%" in md and f"{100 * e['student_accuracy']:.1f}%" in md
    for name in ("loss_curves.png", "speed_size.png"):
        assert (root / "run" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_of_the_run_extended_by_a_stage(tiny_run, capsys):
    """The finished run with one more stage: what is complete stays complete; the new stage,
    the export and the evaluation would run; nothing is written."""
    from xdistil_ray.config import to_dict
    from xdistil_ray.dry_run import dry_run
    from xdistil_ray.runfolder import RunFolder

    root, cfg, _, overrides, _, _ = tiny_run
    stages = [to_dict(s) for s in cfg.stages] + [
        {"name": "extra", "losses": [{"type": "logits"}], "epochs": 1, "batch_size": 32}]
    run = RunFolder(str(root / "run"))
    before = run.list_files("")
    states = {s.name: s.state for s in dry_run(load_config(
        "jobs/configs/tiny.yaml", overrides + ["stages=" + json.dumps(stages)]))}
    assert run.list_files("") == before
    for name in ("data", "teacher_finetune", "teacher", "student_init", "stage 1: representation",
                 "stage 2: logits", "stage 3: labels"):
        assert states[name] == "complete", (name, states[name])
    assert states["stage 4: extra"] == "to run"
    assert states["student"].startswith("to run") and states["eval"].startswith("to run")
    out = capsys.readouterr().out
    assert "4 step(s) would run: stage 4: extra, student, eval, report" in out
    assert re.search(r"stage 4: extra: TO RUN\n\s+what:\s+logits; 1 epoch\(s\) at batch 32, "
                     r"\d+ steps", out), out
