"""The run folder's typed markers: every kind round-trips, the markers written by the code
before they were typed (ec4eb94, kept in tests/markers/) read as their kinds, a newer version
is refused, and no module but run/markers.py spells a marker's file or parses one."""

import dataclasses
import json
import os
import pathlib
import re

import pytest

from xdistil_ray.run import markers
from xdistil_ray.run.markers import (VERSION, CorpusStats, DataMarker, EvalMarker, FileRows,
                                     InitMarker, LabeledData, Marker, MarkerVersionError,
                                     ModelMarker, ShardMarker, SplitStats, StageMarker, Started,
                                     TeacherMarker)
from xdistil_ray.run.runfolder import RunFolder

OLD = pathlib.Path(__file__).parent / "markers" / "ec4eb94"
"""Markers of a run folder made at ec4eb94 (``python jobs/distill.py --config tiny
teacher.finetune.epochs=1 export.onnx=false``, 2026-12-07), their file lists cut to 3."""

PACKAGE = pathlib.Path(markers.__file__).parents[1]


def _old(name: str) -> dict:
    return json.loads((OLD / name).read_text())


def test_every_kind_round_trips_through_the_run_folder(tmp_path):
    run = RunFolder(str(tmp_path))
    split = SplitStats(input_rows=10, kept=9, files=[FileRows("train.parquet", 9, 120)],
                       dropped={"empty": 1}, windows=12, to_dev=1)
    written = [
        DataMarker({}, {"seed": 0}, corpus=CorpusStats(5, 4, [FileRows("s0.parquet", 4, 99)],
                                                      heldout=1, windows=6),
                   labeled=LabeledData({"train": split}, ["a", "b"]), pairs=True, task="qa",
                   seconds=1.5),
        TeacherMarker({"shards/x/p.parquet": 3}, rows=4, outputs=["logits"], top_k=2,
                      shards_run=1),
        ShardMarker({"p.parquet": 3}, rows=4),
        InitMarker({"model/w": 1}, teacher_params=10, student_params=2,
                   student_shape={"hidden_size": 8}),
        StageMarker({"model/w": 1}, {"stages.0.epochs": 1.0}, name="logits", losses=["logits"],
                    steps=5, resumed_from=[5], steps_per_second=None,
                    validation={"metric": "heldout_loss"}, nodes=["n0", "n1"]),
        ModelMarker({"config.json": 2}, params=7),
        EvalMarker({}, eval={"agreement": 0.9}, size={"params": 7}, speed=None),
    ]
    for k, marker in enumerate(written):
        assert run.commit(f"s{k}", marker) is marker
        assert run.marker(f"s{k}", type(marker)) == marker
        assert json.loads(markers.dump(marker))["version"] == VERSION
    run.start("s9", {"x": 1})
    assert run.started("s9") == Started({"x": 1})
    data = run.marker("s0", DataMarker)
    assert data.split("train").training_rows == 12 and data.corpus.training_rows == 6
    assert data.split("dev") is None and data.label_names == ["a", "b"]


def test_the_markers_of_a_folder_made_before_they_were_typed_read_as_their_kinds():
    """A run folder made by ec4eb94 (markers without a version) resumes: every marker reads as
    its kind with the figures it holds, at version 1."""
    data = markers.parse(_old("data.json"), DataMarker, "data")
    assert data.version == VERSION and data.task == "sentence" and not data.pairs
    assert data.corpus.kept == 22800 and data.corpus.heldout == 2291
    assert data.corpus.labeled_rows == 2000 and data.corpus.dropped["duplicate"] == 208
    assert isinstance(data.corpus.shards[0], FileRows) and data.corpus.shards[0].rows > 0
    assert data.split("train").kept == 2000 and data.split("dev").files[0].file == "dev.parquet"
    assert data.label_names == ["mostly negative", "mostly positive", "negative", "positive"]
    assert data.fingerprint["corpus.path"] == "embedded"

    teacher = markers.parse(_old("teacher.json"), TeacherMarker, "teacher")
    assert teacher.outputs == ["logits", "hidden"] and teacher.rows == 22800
    assert teacher.shards_run + teacher.shards_skipped == 90
    assert markers.parse(_old("shard.json"), ShardMarker, "shard").rows > 0
    assert markers.parse(_old("teacher.STARTED.json"), Started, "STARTED").fingerprint[
        "teacher.model"] == "embedded"

    init = markers.parse(_old("student_init.json"), InitMarker, "init")
    assert init.student_shape["hidden_size"] == 64 and init.teacher_params > init.student_params
    stage = markers.parse(_old("stage.json"), StageMarker, "stage")
    assert (stage.name, stage.steps, stage.targets, stage.unfreeze) == ("labels", 125, "none",
                                                                       False)
    assert stage.validation["metric"] == "accuracy" and len(stage.nodes) == 2
    finetune = markers.parse(_old("teacher_finetune.json"), StageMarker, "teacher_finetune")
    assert finetune.name == "teacher_finetune" and finetune.steps > 0
    model = markers.parse(_old("student.json"), ModelMarker, "student")
    assert model.params > 0 and "README.md" in model.files
    evaluation = markers.parse(_old("eval.json"), EvalMarker, "eval")
    assert 0.5 < evaluation.eval["student_accuracy"] < 1 and evaluation.speed["batch_size"] == 64


def test_the_fine_tuning_jobs_markers_of_before_read_as_their_kinds():
    """Its data marker has labeled splits and no corpus; its init marker the model's figures
    (``python jobs/finetune.py --config finetune model=<the run above>/student
    finetune.epochs=1`` at ec4eb94)."""
    data = markers.parse(_old("finetune_data.json"), DataMarker, "data")
    assert data.corpus is None and data.split("train").training_rows == 2000
    assert data.split("dev").kept == 500 and len(data.label_names) == 4
    init = markers.parse(_old("finetune_init.json"), InitMarker, "init")
    assert init.params == 2057536 and init.init == "pretrained"


def test_a_marker_of_a_newer_version_is_refused_naming_both(tmp_path):
    """Running the step again would overwrite a newer xdistil_ray's work: refused, before any
    work, by the runner's change check too."""
    from xdistil_ray.run.steps import Runner

    run = RunFolder(str(tmp_path))
    run.write_bytes("data/COMPLETE", json.dumps({**_old("data.json"), "version": VERSION + 1})
                    .encode())
    with pytest.raises(MarkerVersionError, match=rf"data/COMPLETE: a marker of version "
                                                 rf"{VERSION + 1}.*reads versions up to "
                                                 rf"{VERSION}"):
        run.marker("data", DataMarker)
    calls = []
    with pytest.raises(MarkerVersionError):
        Runner(run).ensure("data", {}, calls.append, kind=DataMarker)
    assert calls == []


@pytest.mark.parametrize("broken", [
    {"corpus": "not an object"},
    {"labeled": {"splits": {"train": {"kept": 3}}, "label_names": []}},  # no input_rows, files
    {"corpus": {"input_rows": 1, "kept": 1, "shards": [{"rows": 1}]}},  # a shard without file
    {"files": None},
    {"pairs": "yes"},
])
def test_a_marker_without_what_its_kind_needs_counts_as_absent(tmp_path, broken, capsys):
    """Cut short or edited by hand: the step runs again, saying why (no KeyError later)."""
    from xdistil_ray.run.steps import Runner

    run = RunFolder(str(tmp_path))
    run.write_bytes("data/COMPLETE", json.dumps({**_old("data.json"), **broken}).encode())
    assert run.marker("data", DataMarker) is None
    if broken != {"files": None}:  # a marker naming no files is an unfinished commit
        assert "is not a data marker" in capsys.readouterr().out
    again = Runner(run).ensure("data", {}, lambda fp: run.commit("data", DataMarker(
        fingerprint=fp)), kind=DataMarker)
    assert run.marker("data", DataMarker) == again  # ran and committed anew


def test_a_plain_marker_reads_any_kinds_files_and_fingerprint():
    marker = markers.parse(_old("data.json"), Marker, "data")
    assert marker.fingerprint["seed"] == 0 and len(marker.files) == 3


def test_every_field_of_a_kind_has_a_json_type():
    """Markers are JSON: a field whose type the reader cannot rebuild would read back as
    something else than it was written."""
    kinds = [DataMarker, TeacherMarker, ShardMarker, InitMarker, StageMarker, ModelMarker,
             EvalMarker, Started, CorpusStats, SplitStats, LabeledData, FileRows]
    for kind in kinds:
        for f in dataclasses.fields(kind):
            assert re.fullmatch(r"(dict|list|int|float|str|bool|None|Any|\[|\]|, |\| | |"
                                r"[A-Z][A-Za-z]+)+", str(f.type)), (kind, f.name, f.type)


def test_only_the_markers_module_spells_marker_files_or_parses_them():
    """Every path of a run folder is named once (run/layout.py), a marker read and written in
    one module: no other module spells ``COMPLETE`` / ``STARTED`` as a string or loads a
    marker's JSON."""
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "markers.py":
            continue
        text = path.read_text()
        for quoted in ('"COMPLETE"', '"STARTED"', "'COMPLETE'", "'STARTED'", '/COMPLETE"',
                       '/STARTED"'):
            if quoted in text:
                spelled.append(f"{os.path.relpath(path, PACKAGE)}: {quoted}")
    assert spelled == []
