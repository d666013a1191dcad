"""The report from markers: the results table, the figures in report.json, readable plots."""

import json

import matplotlib.image
import pytest

from xdistil_ray.config import load_config
from xdistil_ray.run.markers import (DataMarker, EvalMarker, InitMarker, ModelMarker,
                                     StageMarker, TeacherMarker, build)
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.report import step as report

EVAL = {
    "eval": {"heldout_rows": 1044, "agreement": 0.9871, "kl_divergence": 0.0123,
             "hidden_cosine": 0.912, "representation_cka": 0.874, "dev_rows": 500,
             "teacher_accuracy": 0.99, "teacher_macro_f1": 0.9899,
             "student_accuracy": 0.962, "student_macro_f1": 0.9615},
    "speed": {"batch_size": 64, "cpu": {
        "name": "1 CPU threads", "teacher_latency_ms": 12.0, "student_latency_ms": 2.0,
        "teacher_throughput": 150.0, "student_throughput": 1350.0, "speedup_latency": 6.0,
        "speedup_throughput": 9.0}},
    "size": {"teacher_params": 22713986, "student_params": 4782722, "compression": 4.749,
             "teacher_disk_bytes": 90_900_000, "student_disk_bytes": 19_200_000,
             "teacher_layers": 6, "teacher_hidden": 384, "student_layers": 4,
             "student_hidden": 128},
}


def _stage(name, losses, first, final):
    return {"name": name, "losses": losses, "targets": "stored", "unfreeze": False,
            "steps": 300, "steps_per_second": 7.5, "first_loss": first, "final_loss": final,
            "resumed_from": [], "seconds": 60.0}


@pytest.fixture()
def written(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    for rel, losses in (("stages/1-representation", ["representation"]),
                        ("stages/2-logits", ["logits"])):
        run.write_json(f"{rel}/losses.json", {
            "stage": rel, "losses": losses, "resumed_from": [100] if "logits" in rel else [],
            "history": [[s, 1.0 / s, 1000.0 + s] for s in range(25, 301, 25)]})
    data = {"corpus": {"input_rows": 21049, "kept": 20800, "dropped": {"empty": 41,
                                                                       "duplicate": 208},
                       "truncated": 0, "heldout": 1044,
                       "shards": [{"file": f"{i}.parquet", "rows": 3467} for i in range(6)]},
            "labeled": {"splits": {"train": {"input_rows": 2000, "kept": 2000, "files": []}},
                        "label_names": ["negative", "positive"]}}
    run.write_text("student/config.json", "{}")  # the exported student, committed
    run.commit("student", ModelMarker(params=4782722, fingerprint={"student.num_layers": 4}))
    stages = [{**_stage("representation", ["representation"], 0.39, 0.026),
               "checkpoint_bytes": [58_100_000, 38_400_000]},
              {**_stage("logits", ["logits"], 0.58, 0.008), "planned_steps": 1000,
               "validation": {"metric": "heldout_loss", "every": 100, "kept_step": 200,
                              "scores": [[1, 100, 0.0143], [2, 200, 0.0116],
                                         [3, 300, 0.0119]],
                              "stopped_early": True, "phase_starts": [[2, 200]]}}]
    out = report.write(run, load_config(), stage_folders=[
        ("1. representation", "stages/1-representation"), ("2. logits", "stages/2-logits")],
        data=build(DataMarker, data),
        teacher=TeacherMarker(rows=20800, outputs=["logits", "hidden"], shards_run=6,
                              shards_skipped=0, seconds=84.0),
        init=InitMarker(teacher_params=22713986, student_params=4782722,
                        student_shape={"num_hidden_layers": 4, "hidden_size": 128,
                                       "num_attention_heads": 4, "intermediate_size": 512}),
        stages=[build(StageMarker, s) for s in stages], evaluation=build(EvalMarker, EVAL),
        seconds=457.0,
        finetune=StageMarker(steps=126, validation={
            "metric": "accuracy", "scores": [[1, 63, 0.912], [2, 126, 0.9]], "kept_epoch": 1,
            "stopped_early": True}))
    return tmp_path / "run", out


def test_results_table_has_teacher_beside_student(written):
    root, _ = written
    md = (root / "report.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert "parameters" in header and "dev accuracy" in header and "CPU speedup (batch 1)" in header
    teacher = next(line for line in lines if line.startswith("| teacher"))
    student = next(line for line in lines if line.startswith("| student"))
    assert "22.7M" in teacher and "99.0%" in teacher and "90.9 MB" in teacher
    assert "4.8M (4.7x fewer)" in student and "96.2%" in student and "98.7%" in student
    assert "retained (dev accuracy)" in header and "| 97.2% | 98.7% |" in student  # 96.2 / 99.0
    assert "| 6.0x | 9.0x |" in student
    assert "0.0123 nats" in md and "cosine 0.912" in md and "CKA 0.874" in md
    assert "![Loss curves](loss_curves.png)" in md and "![Size and speed](speed_size.png)" in md
    assert ("- teacher fine-tune: dev accuracy by epoch 91.2%, 90.0%; kept epoch 1, stopped "
            "early") in md
    assert ("- logits: held-out loss every 100 steps 0.0143, 0.0116, 0.0119; kept step 200; "
            "phase 2 started early at step 200, stopped early") in md
    assert "last checkpoint (rank 0 adds the progress, the full module and, at the end, the " \
        "student): representation 58.1 MB / 38.4 MB" in md  # the logits stage recorded none


def test_report_json_holds_the_same_figures(written):
    root, out = written
    on_disk = json.loads((root / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(out))
    assert on_disk["eval"] == EVAL["eval"] and on_disk["speed"] == EVAL["speed"]
    assert on_disk["plots"] == {"loss_curves": "loss_curves.png", "speed_size": "speed_size.png"}
    assert on_disk["stages"][0]["steps_per_second"] == 7.5
    assert on_disk["stages"][0]["planned_steps"] == 300  # a marker from before it: its steps
    assert on_disk["stages"][1]["planned_steps"] == 1000
    assert on_disk["retained"] == {"metric": "accuracy",
                                   "share": pytest.approx(EVAL["eval"]["student_accuracy"]
                                                          / EVAL["eval"]["teacher_accuracy"])}


def test_plots_are_real_pngs_of_readable_size(written):
    root, _ = written
    for name in ("loss_curves.png", "speed_size.png"):
        image = matplotlib.image.imread(str(root / name))
        assert image.shape[0] >= 300 and image.shape[1] >= 600, (name, image.shape)
        assert image[..., :3].std() > 0.05  # not blank


def test_summary_names_student_report_and_headline(written):
    root, out = written
    text = report.summary(RunFolder(str(root)), out)
    assert f"{root}/student" in text and f"{root}/report.md" in text
    assert "dev accuracy student 96.2% / teacher 99.0% (97.2% retained)" in text
    assert "agreement 98.7%" in text and "4.7x fewer parameters" in text
    assert "6.0x faster at batch 1, 9.0x at batch 64" in text


def test_token_task_columns(written):
    e = dict(EVAL["eval"])
    for who in ("teacher", "student"):
        del e[f"{who}_accuracy"], e[f"{who}_macro_f1"]
        e[f"{who}_entity_f1"], e[f"{who}_word_accuracy"] = 0.8, 0.9
    rep = {**json.loads((written[0] / "report.json").read_text()), "eval": e}
    md = report.markdown(rep)
    assert "dev entity F1" in md and "dev word acc." in md and "80.0%" in md
    assert "retained (dev entity F1)" in md


def test_a_qa_report_counts_questions_and_windows(written):
    rep = json.loads((written[0] / "report.json").read_text())
    sentence_md = report.markdown(rep)
    assert "(1044 held-out transfer sentences)" in sentence_md
    assert "for 20800 sentences in 84s" in sentence_md
    e = dict(EVAL["eval"])
    for who in ("teacher", "student"):
        del e[f"{who}_accuracy"], e[f"{who}_macro_f1"]
        e[f"{who}_exact"], e[f"{who}_f1"] = 0.9, 0.95
    md = report.markdown({**rep, "task": "qa", "eval": e})
    assert "(1044 held-out transfer questions)" in md and "1044 questions held out" in md
    assert "for 20800 windows in 84s" in md
    assert "retained (dev F1)" in md


def test_the_students_model_card_carries_the_reports_figures(written):
    """<run>/student/README.md in the Hub's format: its metadata parsed by huggingface_hub,
    the metrics equal to report.json's, the card committed with the folder."""
    from huggingface_hub import ModelCard

    root, out = written
    card = ModelCard.load(str(root / "student" / "README.md"))
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the embedded teacher
    assert data.model_name == "run" and "knowledge-distillation" in data.tags
    results = {r.metric_name: r.metric_value for r in data.eval_results}
    e = out["eval"]
    assert results == {"dev accuracy": round(e["student_accuracy"], 4),
                       "dev macro-F1": round(e["student_macro_f1"], 4),
                       "agreement with the teacher (held-out transfer set)":
                           round(e["agreement"], 4)}
    assert {r.task_type for r in data.eval_results} == {"text-classification"}
    assert {r.dataset_split for r in data.eval_results} == {"dev"}
    text = card.text
    assert "4.7x fewer parameters, 6.0x faster on CPU at batch 1" in text
    assert "97.2% of the teacher's dev accuracy" in text
    assert "| representation | representation | stored | none | 300 | 0.0260 |" in text
    assert "AutoModelForSequenceClassification.from_pretrained(folder)" in text
    marker = RunFolder(str(root)).marker("student", ModelMarker)
    assert marker.files["README.md"] == (root / "student" / "README.md").stat().st_size
    assert marker.files["config.json"] == 2 and marker.params == 4782722
    assert marker.fingerprint == {"student.num_layers": 4}


def test_a_fine_tuned_models_card(tmp_path):
    from huggingface_hub import ModelCard

    from xdistil_ray.report import model_card
    from xdistil_ray.config import FinetuneJob

    cfg = load_config(None, ["model=runs/agnostic/student", "task=token"], kind=FinetuneJob)
    rep = {"task": "token", "init": "pretrained",
           "data": {"labeled": {"train": {"kept": 800}}, "label_names": ["O", "B-PER"]},
           "finetune": {"steps": 120}, "eval": {"entity_f1": 0.8123, "word_accuracy": 0.95},
           "size": {"num_layers": 2, "hidden_size": 128, "params": 1.2e6}}
    card = ModelCard(model_card.finetune_card(rep, cfg, "tagger"))
    assert card.data.pipeline_tag == "token-classification"
    assert card.data.base_model is None  # a local folder is no hub id
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        "dev entity F1": 0.8123, "dev word accuracy": 0.95}
    assert "| fine-tuned | 2 x 128 | 1.2M | 81.2% | 95.0% |" in card.text
    assert "AutoModelForTokenClassification" in card.text


ONNX = {"fp32": {"latency_ms": 1.5, "throughput": 1800.0, "disk_bytes": 19_300_000},
        "int8": {"latency_ms": 0.8, "throughput": 3000.0, "disk_bytes": 5_100_000}}
INT8_EVAL = {"int8_agreement": 0.975, "int8_kl_divergence": 0.02, "int8_accuracy": 0.955,
             "int8_macro_f1": 0.954}


def test_the_onnx_copies_have_their_rows_and_the_int8_one_its_scores(written):
    rep = json.loads((written[0] / "report.json").read_text())
    rep["eval"] = {**rep["eval"], **INT8_EVAL}
    rep["speed"]["cpu"]["onnx"] = ONNX
    md = report.markdown(rep)
    int8 = next(line for line in md.splitlines() if line.startswith("| student, ONNX Runtime int8"))
    # size, speedups against the teacher in PyTorch (12 ms / 0.8 ms; 3000 / 150), dev accuracy,
    # macro-F1,
    # retained (95.5 / 99.0), agreement
    assert "| 5.1 MB | 15.0x | 20.0x | 95.5% | 95.4% | 96.5% | 97.5% |" in int8
    assert "| ONNX Runtime fp32, CPU (1 CPU threads): latency, batch 1 | 12.0 ms | 1.5 ms | " \
           "8.0x faster |" in md
    assert "| ONNX Runtime int8, CPU (1 CPU threads): size on disk | 90.9 MB | 5.1 MB | " \
           "17.8x smaller |" in md
    assert "int8 ONNX: dev accuracy 95.5%, 15.0x faster at batch 1, 5.1 MB" in report.headline(rep)
    # without an export: no such rows
    plain = report.markdown(json.loads((written[0] / "report.json").read_text()))
    assert "ONNX" not in plain


def test_a_model_card_with_onnx_copies_says_how_to_load_them(written):
    from huggingface_hub import ModelCard

    from xdistil_ray.report import model_card

    rep = json.loads((written[0] / "report.json").read_text())
    rep["eval"] = {**rep["eval"], **INT8_EVAL}
    rep["speed"]["cpu"]["onnx"] = ONNX
    text = ModelCard(model_card.distillation_card(rep, load_config(), "run")).text
    assert "| student, ONNX Runtime int8 | 4 x 128 | 4.8M | 5.1 MB |" in text
    assert 'ORTModelForSequenceClassification.from_pretrained(folder, subfolder="onnx", ' \
           'file_name="model_quantized.onnx")' in text
    assert "fp32 19.3 MB, int8 5.1 MB" in text

