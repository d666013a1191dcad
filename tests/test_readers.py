"""Where users keep data: `datasets` inputs (saved to disk, hub-style folders with configs and
splits, ClassLabel labels) and .tsv/.csv files, read offline from files `datasets` wrote."""

import pytest

from xdistil_ray.tasks import corpus
from xdistil_ray.config import ConfigError
from xdistil_ray.data.readers import (data_files, delimited_records, load_records, parse_hf,
                                 resolve_source)
from xdistil_ray.data import step as prepare

datasets = pytest.importorskip("datasets")

SST2 = datasets.Features({"sentence": datasets.Value("string"),
                          "label": datasets.ClassLabel(names=["negative", "positive"])})
NER = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                         "ner_tags": datasets.Sequence(datasets.ClassLabel(
                             names=["O", "B-PER", "I-PER"]))})


def _glue_like(root):
    """A hub-style folder as GLUE's: README.md configs `sst2` and `ner`, parquet per split
    (GLUE's test split has label -1)."""
    import os

    splits = {"sst2": {"train": {"sentence": ["a fine film", "dull"], "label": [1, 0]},
                       "validation": {"sentence": ["great", "bad"], "label": [1, 0]},
                       "test": {"sentence": ["unknown"], "label": [-1]}},
              "ner": {"train": {"tokens": [["Ada", "Lovelace", "wrote"]],
                                "ner_tags": [[1, 2, 0]]}}}
    for name, parts in splits.items():
        os.makedirs(root / name)
        for split, rows in parts.items():
            datasets.Dataset.from_dict(rows, features=SST2 if name == "sst2" else NER).to_parquet(
                str(root / name / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: sst2\n  data_files:\n"
        "  - split: train\n    path: sst2/train-*.parquet\n"
        "  - split: validation\n    path: sst2/validation-*.parquet\n"
        "  - split: test\n    path: sst2/test-*.parquet\n"
        "- config_name: ner\n  data_files:\n"
        "  - split: train\n    path: ner/train-*.parquet\n---\n")
    return root


def test_hf_spec_takes_a_config_name():
    assert parse_hf("hf:nyu-mll/glue:sst2") == ("nyu-mll/glue", "sst2")
    assert parse_hf("hf:imdb") == ("imdb", "")
    with pytest.raises(ConfigError, match="give a dataset"):
        parse_hf("hf:")


def test_hub_folder_config_and_splits_with_class_label_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = _glue_like(tmp_path / "glue")
    train = resolve_source(f"hf:{root}:sst2", "labeled.train", split="train")
    dev = resolve_source(f"hf:{root}:sst2", "labeled.dev", split="validation")
    rows, encoding = load_records(train, columns=["sentence", "label"])
    assert encoding == "records"
    assert rows == [{"sentence": "a fine film", "label": "positive"},
                    {"sentence": "dull", "label": "negative"}]
    assert [r["label"] for r in load_records(dev, columns=["sentence", "label"])[0]] == \
        ["positive", "negative"]
    test = load_records(resolve_source(f"hf:{root}:sst2", "x", split="test"),
                        columns=["sentence", "label"])[0]
    assert test == [{"sentence": "unknown", "label": None}]  # -1: no label, counted missing
    tokens = load_records(resolve_source(f"hf:{root}:ner", "x"), columns=["tokens", "ner_tags"])[0]
    assert tokens == [{"tokens": ["Ada", "Lovelace", "wrote"], "ner_tags": ["B-PER", "I-PER", "O"]}]
    # the corpus streams from the split's own files
    files = data_files(resolve_source(f"hf:{root}:sst2", "corpus.path", split="validation"))
    assert files.fmt == "parquet" and [f.rsplit("/", 2)[-2:] for f in files.files] == \
        [["sst2", "validation-00000-of-00001.parquet"]]
    with pytest.raises(ConfigError, match="no split 'dev'.*validation"):
        load_records(resolve_source(f"hf:{root}:sst2", "labeled.dev", split="dev"),
                     columns=["sentence", "label"])
    with pytest.raises(ConfigError, match="no split 'dev'"):
        data_files(resolve_source(f"hf:{root}:sst2", "corpus.path", split="dev"))
    with pytest.raises(ConfigError, match="cannot be loaded"):
        data_files(resolve_source(f"hf:{root}:mnli", "corpus.path"))


def test_saved_dataset_dict_with_class_labels(tmp_path):
    path = str(tmp_path / "saved")
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [0, 1]},
                                            features=SST2),
        "validation": datasets.Dataset.from_dict({"sentence": ["z"], "label": [1]},
                                                 features=SST2)}).save_to_disk(path)
    dev = resolve_source(path, "labeled.dev", split="validation")
    assert dev.kind == "hf_disk"
    assert load_records(dev, columns=["sentence", "label"])[0] == \
        [{"sentence": "z", "label": "positive"}]
    files = data_files(dev)
    assert files.fmt == "arrow" and files.files[0].endswith("validation/data-00000-of-00001.arrow")
    with pytest.raises(ConfigError, match="no split 'test'"):
        data_files(resolve_source(path, "corpus.path", split="test"))


def test_parquet_written_by_datasets_keeps_label_names(tmp_path):
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"sentence": ["x"], "label": [1]}, features=SST2).to_parquet(
        str(path))
    rows = load_records(resolve_source(str(path), "labeled.train"),
                        columns=["sentence", "label"])[0]
    assert rows == [{"sentence": "x", "label": "positive"}]


def test_tsv_without_header_is_xtremedistils_layout():
    data = (b"a good film\tpos\nawful\tneg\n\nthree\tfields\there\nbad \xff byte\tneg\n"
            b'an "unbalanced quote\tpos\nlast line without newline\tneg')
    chunks = [data[k:k + 5] for k in range(0, len(data), 5)]  # lines across chunk borders
    rows = list(delimited_records(iter(chunks), "tsv", ["text", "label"], header=False))
    assert [(r["text"], r["label"], r[corpus.ROW_REASON]) for r in rows] == [
        ("a good film", "pos", ""), ("awful", "neg", ""), (None, None, corpus.EMPTY),
        (None, None, corpus.BAD_ROW), (None, None, corpus.INVALID_UTF8),
        ('an "unbalanced quote', "pos", ""), ("last line without newline", "neg", "")]


def test_csv_with_header_quoted_fields_any_column_order():
    data = b'\xef\xbb\xbfid,label,text\n1,pos,"multi\nline, with a comma"\n2,neg,plain\n'
    rows = list(delimited_records(iter([data]), "csv", ["text", "label"], header=True))
    assert [(r["text"], r["label"]) for r in rows] == [("multi\nline, with a comma", "pos"),
                                                       ("plain", "neg")]


def test_delimited_header_is_detected_and_checked(tmp_path):
    (tmp_path / "h.tsv").write_text("label\ttext\npos\tfine\n")
    (tmp_path / "n.tsv").write_text("fine\tpos\n")
    (tmp_path / "one.tsv").write_text("only text\n")
    rows = load_records(resolve_source(str(tmp_path / "h.tsv"), "x"), columns=["text", "label"])
    assert rows[0] == [{"text": "fine", "label": "pos", corpus.ROW_REASON: ""}]
    rows = load_records(resolve_source(str(tmp_path / "n.tsv"), "x"), columns=["text", "label"])
    assert rows[0] == [{"text": "fine", "label": "pos", corpus.ROW_REASON: ""}]
    with pytest.raises(ConfigError, match="one.tsv.*1 column"):
        load_records(resolve_source(str(tmp_path / "one.tsv"), "x"), columns=["text", "label"])
    with pytest.raises(ConfigError, match="starts with a header"):
        load_records(resolve_source(str(tmp_path / "[hn].tsv"), "x"), columns=["text", "label"])


def test_labeled_tsv_through_the_data_step(tmp_path, teacher_path):
    """XtremeDistil's train.tsv / dev.tsv: every row counted, kept or dropped by reason."""
    from xdistil_ray.run.runfolder import RunFolder

    (tmp_path / "train.tsv").write_bytes(b"good\tpos\nbad\tneg\nodd\n\t\tx\nfine\tpos\n")
    (tmp_path / "dev.tsv").write_bytes(b"great\tpos\nugly\tneutral\n")
    run = RunFolder(str(tmp_path / "run"))
    out = prepare.prepare_labeled(
        run, {s: resolve_source(str(tmp_path / f"{s}.tsv"), f"labeled.{s}")
              for s in ("train", "dev")},
        prepare.TextSettings(teacher_path, 16, 1000, 0.0), text_column="text",
        label_column="label")
    assert out["label_names"] == ["neg", "pos"]
    assert out["splits"]["train"]["kept"] == 3
    assert out["splits"]["train"]["dropped"] == {corpus.BAD_ROW: 2}
    assert out["splits"]["dev"]["dropped"] == {corpus.UNKNOWN_LABEL: 1}


def test_config_reads_hub_splits_for_train_and_dev(tmp_path, monkeypatch):
    """`labeled.train` / `labeled.dev` on one hub dataset take their splits from
    `labeled.train_split` / `labeled.dev_split` (defaults train / validation)."""
    from xdistil_ray.pipelines import inputs as pipeline
    from xdistil_ray.config import load_config
    from xdistil_ray.run.runfolder import RunFolder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = _glue_like(tmp_path / "glue")
    (tmp_path / "corpus.txt").write_text("one sentence\n")
    cfg = load_config(None, [f"output={tmp_path}/run", f"labeled.train=hf:{root}:sst2",
                             f"labeled.dev=hf:{root}:sst2", "labeled.text_column=sentence",
                             f"corpus.path={tmp_path}/corpus.txt"])
    inputs = pipeline.resolve_inputs(cfg, RunFolder(cfg.output))
    assert (inputs.labeled["train"].split, inputs.labeled["dev"].split) == ("train", "validation")
    assert inputs.labeled["dev"].config == "sst2"
    cfg = load_config(None, [f"output={tmp_path}/run", f"labeled.train=hf:{root}:sst2",
                             "labeled.dev=", "labeled.train_split=test",
                             f"corpus.path={tmp_path}/corpus.txt"])
    assert pipeline.resolve_inputs(cfg, RunFolder(cfg.output)).labeled["train"].split == "test"


def test_tsv_is_refused_for_token_rows(tmp_path):
    from xdistil_ray.pipelines import inputs as pipeline
    from xdistil_ray.config import load_config
    from xdistil_ray.run.runfolder import RunFolder

    (tmp_path / "train.tsv").write_text("a b\tO O\n")
    cfg = load_config(None, [f"output={tmp_path}/run", "task=token",
                             f"labeled.train={tmp_path}/train.tsv", "labeled.dev="])
    with pytest.raises(ConfigError, match="labeled.train: .tsv holds flat columns"):
        pipeline.resolve_inputs(cfg, RunFolder(cfg.output))


def test_a_line_past_the_limit_keeps_its_first_bytes_at_a_character_boundary():
    from xdistil_ray.data.readers import _LineCutter

    cutter = _LineCutter(limit=10)
    text = "short\n" + "é" * 20 + "\nlast"
    data = text.encode()
    for i in range(0, len(data), 3):  # chunk borders everywhere, inside characters too
        cutter.feed(data[i:i + 3])
    cutter.finish()
    table = cutter.table()
    lines = [b.decode() for b in table.column("raw").to_pylist()]
    assert lines == ["short", "é" * 5, "last"]  # 10 bytes of 2-byte characters
    assert table.column("cut").to_pylist() == [False, True, False]
    cutter = _LineCutter(limit=10)
    cutter.feed(b"a" * 9 + "é".encode() + b"\n")  # the limit splits the last character
    cutter.finish()
    assert cutter.table().column("raw").to_pylist() == [b"a" * 9]


def test_a_huge_line_is_read_in_linear_time_and_bounded_memory(tmp_path):
    """A 256 MiB line among short ones: read in 1 MiB chunks (as Ray Data hands a file over),
    its first bytes kept; the reader used to re-copy the line's head with each chunk, time
    quadratic in its length."""
    import time

    import pyarrow as pa

    from xdistil_ray.data.readers import LinesDatasource

    path = tmp_path / "corpus.txt"
    with open(path, "wb") as f:
        f.write(b"first line\n")
        block = b"x" * (1 << 20)
        for _ in range(256):
            f.write(block)
        f.write(b"\nlast line\n")
    import ray

    ours = not ray.is_initialized()  # the datasource starts a local Ray if none is up
    try:
        source = LinesDatasource([str(path)], max_line_bytes=80_004)
        start = time.time()
        with pa.OSFile(str(path)) as f:
            tables = list(source._read_stream(f, str(path)))
        took = time.time() - start
    finally:
        if ours:
            ray.shutdown()
    table = pa.concat_tables(tables)
    assert [len(r) for r in table.column("raw").to_pylist()] == [10, 80_004, 9]
    assert table.column("cut").to_pylist() == [False, True, False]
    assert took < 10, took  # 0.3 s here; the old reader, 108 s on the same chunks (2026-12-01)


def test_a_cut_json_line_is_counted_too_long_and_a_cut_text_line_truncated():
    import numpy as np

    from xdistil_ray.data.step import clean_batch, max_line_bytes

    assert max_line_bytes(100, "txt") == 404 and max_line_bytes(100, "jsonl") == 404 * 16
    batch = {"raw": np.array([b'{"text": "fine"}', b'{"text": "aaaa'], dtype=object),
             "cut": np.array([False, True])}
    out = clean_batch(batch, encoding="jsonl", text_column="text", label_column=None)
    assert list(out["reason"]) == ["", "too_long"] and out["text"][1] is None
    out = clean_batch({"raw": np.array([b"b" * 404], dtype=object), "cut": np.array([True])},
                      encoding="txt", text_column="text", label_column=None)
    assert list(out["reason"]) == [""]  # kept: clipped to max_chars, counted as truncated
