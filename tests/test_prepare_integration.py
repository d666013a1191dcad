"""The prepare step on every input format, with real Ray: exact counts, shards, labeled splits."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xdistil_ray.config import ConfigError
from xdistil_ray.data.readers import resolve_source
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.data import step as prepare

pytestmark = pytest.mark.integration

TEXTS = ["first sentence", "second sentence", "first sentence", "", "  ", "третье предложение",
         "x " * 5000]


def _write(fmt: str, folder) -> str:
    if fmt == "jsonl":
        path = folder / "c.jsonl"
        rows = [json.dumps({"text": t}) for t in TEXTS] + ['{"text": 5}', "{broken"]
        path.write_text("\n".join(rows) + "\n")
    elif fmt == "parquet":
        path = folder / "c.parquet"
        pq.write_table(pa.table({"text": TEXTS + [None, None], "other": list(range(9))}), path)
    elif fmt in ("tsv", "csv"):  # a header row; a row with a stray field; an empty line
        path = folder / f"c.{fmt}"
        sep = "\t" if fmt == "tsv" else ","
        rows = [f"text{sep}n"] + [f"{t}{sep}{k}" for k, t in enumerate(TEXTS)]
        path.write_text("\n".join(rows + [f"a{sep}b{sep}c", ""]) + "\n")
    elif fmt == "hf_hub":  # a hub-style folder: parquet files per split, named as the hub's
        import datasets

        path = folder / "hub"
        (path / "data").mkdir(parents=True)
        datasets.Dataset.from_dict({"text": TEXTS + [None, None]}).to_parquet(
            str(path / "data" / "train-00000-of-00001.parquet"))
        datasets.Dataset.from_dict({"text": ["other split"]}).to_parquet(
            str(path / "data" / "validation-00000-of-00001.parquet"))
        return f"hf:{path}"
    else:  # a DatasetDict saved to disk: the train split is read
        import datasets

        path = folder / "hf"
        datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": TEXTS + [None, None]}),
            "validation": datasets.Dataset.from_dict({"text": ["other split"]}),
        }).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "tsv", "csv", "hf_disk", "hf_hub"])
def test_corpus_formats_count_every_row(fmt, tmp_path, ray_local, teacher_path):
    source = resolve_source(_write(fmt, tmp_path), "corpus.path")
    run = RunFolder(str(tmp_path / "run"))
    settings = prepare.TextSettings(teacher_path, 24, 1000, 0.2)  # the Cyrillic row is 19 tokens
    stats = prepare.prepare_corpus(run, source, settings, text_column="text",
                                   rows_per_shard=2)
    bad = {"jsonl": {"missing_text": 1, "bad_json": 1},
           "tsv": {"bad_row": 1, "empty": 1}, "csv": {"bad_row": 1, "empty": 1},
           }.get(fmt, {"missing_text": 2})
    assert stats["input_rows"] == 9
    empty = 1 + bad.pop("empty", 0)
    assert stats["dropped"] == {"duplicate": 1, "empty": empty, "whitespace_only": 1, **bad}
    assert stats["kept"] == 4 and stats["truncated"] == 1
    assert stats["input_rows"] == stats["kept"] + sum(stats["dropped"].values())
    assert sum(s["rows"] for s in stats["shards"]) == 4
    table = pa.concat_tables(pq.read_table(run.path("data/corpus", s["file"]))
                             for s in stats["shards"])
    assert sorted(table.column("text").to_pylist())[:2] == ["first sentence", "second sentence"]
    assert max(len(ids) for ids in table.column("input_ids").to_pylist()) == 24
    assert len(set(table.column("id").to_pylist())) == 4


def test_labeled_splits_and_unknown_labels(tmp_path, teacher_path):
    train = tmp_path / "train.jsonl"
    dev = tmp_path / "dev.jsonl"
    train.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n'
                     '{"text": "meh"}\n')
    dev.write_text('{"text": "fine", "label": "pos"}\n{"text": "odd", "label": "neutral"}\n')
    run = RunFolder(str(tmp_path / "run"))
    settings = prepare.TextSettings(teacher_path, 16, 1000, 0.2)
    out = prepare.prepare_labeled(run, {"train": resolve_source(str(train), "labeled.train"),
                                        "dev": resolve_source(str(dev), "labeled.dev")},
                                  settings, text_column="text", label_column="label")
    assert out["label_names"] == ["neg", "pos"]
    assert out["splits"]["train"]["dropped"] == {"missing_label": 1}
    assert out["splits"]["dev"]["dropped"] == {"unknown_label": 1}
    assert out["splits"]["dev"]["kept"] == 1


def test_without_dev_a_share_of_train_is_the_dev_set(tmp_path, teacher_path):
    """No labeled.dev: a stable share of the kept training rows (by text hash) becomes dev,
    disjoint from train; the label names are those of the whole training set."""
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"sentence number {k}", "label": "pos" if k % 3 else "neg"}
            for k in range(200)] + [{"text": "no label"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = prepare.TextSettings(teacher_path, 16, 1000, 0.2)

    def carve(folder, fraction):
        run = RunFolder(str(tmp_path / folder))
        out = prepare.prepare_labeled(run, {"train": resolve_source(str(train), "labeled.train")},
                                      settings, text_column="text", label_column="label",
                                      dev_fraction=fraction)
        texts = {split: set(pq.read_table(run.path(f"data/labeled/{split}", f"{split}.parquet"))
                            .column("text").to_pylist()) for split in out["splits"]}
        return out, texts

    out, texts = carve("a", 0.1)
    train_stats, dev_stats = out["splits"]["train"], out["splits"]["dev"]
    assert out["label_names"] == ["neg", "pos"]
    assert 8 <= dev_stats["kept"] <= 35 and dev_stats["from_train"] == 0.1  # 10% of 200, +-
    assert train_stats["kept"] + dev_stats["kept"] == 200 and train_stats["to_dev"] == dev_stats["kept"]
    assert train_stats["dropped"] == {"missing_label": 1} and train_stats["input_rows"] == 201
    assert not texts["train"] & texts["dev"] and len(texts["dev"]) == dev_stats["kept"]
    assert carve("b", 0.1)[1] == texts  # the same rows on every run
    out, texts = carve("c", 0.0)
    assert list(out["splits"]) == ["train"] and len(texts["train"]) == 200


def test_txt_is_refused_for_labeled_data(tmp_path):
    from xdistil_ray.data.readers import load_records

    path = tmp_path / "l.txt"
    path.write_text("a\n")
    with pytest.raises(ConfigError, match="labeled data needs"):
        load_records(resolve_source(str(path), "labeled.train"), columns=["text", "label"])


def test_a_parquet_pass_starts_few_footer_actors(tmp_path, ray_local):
    """Ray Data 2.60 starts 32 footer-reading actors (32 Python processes) per parquet pass by
    default; the project's Ray runs with two (ray_start.RAY_ENV)."""
    import ray.data
    from ray.util.state import list_actors

    def footer_actors():
        return {a.actor_id for a in list_actors(filters=[("class_name", "=", "FooterReader")],
                                                 limit=10_000, raise_on_missing_output=False)}

    for k in range(3):
        pq.write_table(pa.table({"x": list(range(10))}), tmp_path / f"{k}.parquet")
    before = footer_actors()
    assert len(ray.data.read_parquet(str(tmp_path)).take_all()) == 30
    started = footer_actors() - before
    assert 1 <= len(started) <= 2, len(started)


def test_qa_transfer_set_is_corpus_and_training_questions_less_the_dev_share(
        tmp_path, ray_local, teacher_path):
    """Extractive QA without labeled.dev: the corpus (parquet question/context rows, a bad one
    among them) and the labeled training questions make the transfer set; the questions carved
    out as dev never enter it; rows in = kept + dropped, windows counted apart."""
    from xdistil_ray.tasks import qa
    from xdistil_ray.data.embedded_tasks import write

    paths = write(str(tmp_path / "data"), "qa", seed=2, num_train=120, num_dev=1, num_corpus=40)
    corpus_rows = [json.loads(line) for line in open(paths["corpus"]) if line.strip()]
    corpus_rows.append({"question": None, "context": "no question"})
    pq.write_table(pa.table({"question": [r["question"] for r in corpus_rows],
                             "context": [r["context"] for r in corpus_rows]}),
                   tmp_path / "corpus.parquet")
    settings = prepare.TextSettings(teacher_path, 0, 0, 0.2, qa.WindowSettings(48, 12))
    run = RunFolder(str(tmp_path / "run"))
    marker = prepare.run_step(
        run, resolve_source(str(tmp_path / "corpus.parquet"), "corpus.path"),
        {"train": resolve_source(paths["train"], "labeled.train")}, settings, text_column="",
        label_column="", labeled_text_column="", rows_per_shard=64,
        fingerprint={}, task="qa", dev_fraction=0.2,
        qa_columns=("question", "context", "answers"))
    c, splits = marker.corpus, marker.labeled.splits
    assert marker.pairs is True
    assert c.input_rows == len(corpus_rows) + 120
    assert c.input_rows == c.kept + sum(c.dropped.values())
    assert c.dropped[qa.MISSING_QUESTION] == 1
    assert c.dropped[qa.DEV_QUESTION] == splits["dev"].kept > 0
    assert c.windows > c.kept and sum(s.rows for s in c.shards) == c.windows
    dev = set(pq.read_table(run.path("data/labeled/dev", "dev.parquet")).column("example")
              .to_pylist())
    transfer = {e for s in c.shards
                for e in pq.read_table(run.path("data/corpus", s.file)).column("example")
                .to_pylist()}
    assert dev and not dev & transfer


@pytest.mark.parametrize("task", ["sentence", "pair"])
def test_labeled_training_rows_join_the_transfer_set(task, tmp_path, ray_local, teacher_path):
    """By default the labeled training rows (not the dev share carved from them) are part of
    the transfer set, deduplicated against the corpus; with_labeled false: the corpus alone."""
    pair = task == "pair"
    train_rows = [{"text": f"labeled sentence {k}", "label": "pos" if k % 2 else "neg",
                   **({"text_pair": f"claim {k}"} if pair else {})} for k in range(60)]
    train_rows.append({"text": "shared sentence", "label": "pos",
                       **({"text_pair": "shared claim"} if pair else {})})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    corpus_rows = [{"text": f"corpus sentence {k}", "text_pair": f"claim {k}"} for k in range(40)]
    corpus_rows.append({"text": "shared sentence", "text_pair": "shared claim"})
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus_rows))
    settings = prepare.TextSettings(teacher_path, 24, 1000, 0.0)

    def run_step(folder, with_labeled):
        run = RunFolder(str(tmp_path / folder))
        marker = prepare.run_step(
            run, resolve_source(str(tmp_path / "corpus.jsonl"), "corpus.path"),
            {"train": resolve_source(str(tmp_path / "train.jsonl"), "labeled.train")}, settings,
            text_column="text", label_column="label", labeled_text_column="text",
            rows_per_shard=32, fingerprint={}, task=task, dev_fraction=0.2,
            pair_column="text_pair" if pair else "",
            labeled_pair_column="text_pair" if pair else "", with_labeled=with_labeled)
        texts = [t for s in marker.corpus.shards
                 for t in pq.read_table(run.path("data/corpus", s.file)).column("text")
                 .to_pylist()]
        dev = set(pq.read_table(run.path("data/labeled/dev", "dev.parquet")).column("text")
                  .to_pylist())
        return marker, texts, dev

    marker, texts, dev = run_step("with", True)
    c, splits = marker.corpus, marker.labeled.splits
    train_kept = splits["train"].kept
    assert 0 < splits["dev"].kept < 30 and train_kept + splits["dev"].kept == 61
    assert c.labeled_rows == train_kept
    assert c.input_rows == 41 + train_kept
    assert c.input_rows == c.kept + sum(c.dropped.values())
    shared_in_train = "shared sentence" not in dev
    assert c.dropped == ({"duplicate": 1} if shared_in_train else {})
    assert len(texts) == len(set(texts)) == c.kept == 41 + train_kept - shared_in_train
    assert not dev & set(texts)  # the dev rows stay out of the transfer set
    assert {f"labeled sentence {k}" for k in range(60)} - dev <= set(texts)
    if pair:  # both sentences of a labeled pair reach the shards
        run = RunFolder(str(tmp_path / "with"))
        table = pa.concat_tables(pq.read_table(run.path("data/corpus", s.file))
                                 for s in c.shards)
        assert all(len(set(ids)) > 1 for ids in table.column("token_type_ids").to_pylist())
    marker, texts, _ = run_step("without", False)
    assert marker.corpus.labeled_rows == 0 and sorted(texts) == sorted(
        r["text"] for r in corpus_rows)
