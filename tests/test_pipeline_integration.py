"""The whole pipeline on a tiny config: real Ray on CPU, the real teacher, real files."""

import json
import os

import pytest

from xdistil_ray.config import ConfigError, load_config
from xdistil_ray.embedded_data import write_embedded_data

pytestmark = pytest.mark.integration

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
def tiny_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("pipeline")
    data = write_embedded_data(str(root / "inputs"), seed=1, num_train=384, num_dev=96,
                               num_corpus=700)
    corpus_dir = root / "corpus"
    corpus_dir.mkdir()
    os.rename(data["corpus"], corpus_dir / "reviews.txt")
    (corpus_dir / "nasty.txt").write_bytes(b"\n".join(NASTY_LINES))
    overrides = [f"output={root}/run", f"corpus.path={corpus_dir}",
                 f"labeled.train={data['train']}", f"labeled.dev={data['dev']}"]
    from xdistil_ray import pipeline

    cfg = load_config("jobs/configs/tiny.yaml", overrides)
    report = pipeline.run(cfg)
    return root, cfg, report, overrides


def test_every_row_accounted_for(tiny_run):
    root, _, report, _ = tiny_run
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
    _, cfg, report, _ = tiny_run
    assert [s["name"] for s in report["stages"]] == [s.name for s in cfg.stages]
    for stage in report["stages"]:
        assert stage["steps"] > 0
        assert stage["final_loss"] < stage["first_loss"], stage


def test_report_has_required_figures(tiny_run):
    _, _, report, _ = tiny_run
    assert report["student"]["params"] < report["teacher"]["params"] / 3
    assert 0.0 <= report["eval"]["agreement"] <= 1.0
    assert report["eval"]["heldout_rows"] > 0
    assert 0.5 < report["eval"]["teacher_accuracy"] <= 1.0
    assert report["speed"]["speedup"] > 1.0
    assert report["teacher"]["finetuned"] is True


def test_exported_student_loads_with_auto_classes_and_pipeline(tiny_run):
    root, _, report, _ = tiny_run
    from transformers import AutoModelForSequenceClassification, pipeline

    folder = str(root / "run" / "student")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    assert set(model.config.id2label.values()) == set(report["data"]["label_names"])
    out = pipeline("text-classification", model=folder, tokenizer=folder)("The battery is great")
    assert out[0]["label"] in report["data"]["label_names"]


def test_second_run_skips_complete_steps(tiny_run, capsys):
    import time

    from xdistil_ray import pipeline

    _, _, report, overrides = tiny_run
    start = time.time()
    again = pipeline.run(load_config("jobs/configs/tiny.yaml", overrides))
    assert time.time() - start < 30
    assert "complete, skipped" in capsys.readouterr().out
    assert again["stages"] == report["stages"] and again["eval"] == report["eval"]


def test_unsafe_config_change_is_refused(tiny_run):
    from xdistil_ray import pipeline

    _, _, _, overrides = tiny_run
    cfg = load_config("jobs/configs/tiny.yaml", overrides + ["student.num_layers=3"])
    with pytest.raises(ConfigError, match="student.num_layers"):
        pipeline.run(cfg)
