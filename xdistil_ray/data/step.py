"""Step ``data``: read, decode, clean, deduplicate and tokenize the corpus and labeled sets.

Ray Data on CPU workers. The corpus goes through a staging folder (clean rows with their reject
reasons) so that reject counts, dedup and tokenization each stream over it without the driver
ever holding the corpus. Output: tokenized parquet shards under ``data/corpus/`` (the unit of
teacher inference) and ``data/labeled/{train,dev}/``, committed by ``data/COMPLETE``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from xdistil_ray.tasks.shapes import task_of
from xdistil_ray.run import layout
from xdistil_ray.tasks import corpus
from xdistil_ray.tasks import qa
from xdistil_ray.errors import ConfigError
from xdistil_ray.observe.progress import counted, start_actor
from xdistil_ray.data.readers import CorpusSource, describe, load_records, read_raw
from xdistil_ray.run import markers
from xdistil_ray.run.markers import CorpusStats, DataMarker, LabeledData
from xdistil_ray.run.runfolder import RunFolder
from xdistil_ray.run.steps import Context, Planned, Step


log = logging.getLogger(__name__)

STEP = layout.DATA
CORPUS = layout.CORPUS
LABELED = layout.LABELED
_STAGING = layout.DATA_STAGING


@dataclass(frozen=True)
class TextSettings:
    """How rows become tokens; shared by the corpus and the labeled sets."""

    tokenizer_path: str
    max_length: int
    max_chars: int
    heldout_fraction: float
    windows: qa.WindowSettings | None = None
    """Extractive QA: contexts split into windows (``max_length`` above does not apply)."""


def clean_batch(batch: dict, *, encoding: str, text_column: str, label_column: str | None,
                pair_column: str | None = None) -> dict:
    """Ray Data UDF: raw rows -> text (+ text_pair), reason, key (16-byte dedup digest, empty
    if dropped)."""
    out = corpus.clean_rows(_raw_rows(batch, encoding), source=encoding, text_column=text_column,
                            label_column=label_column, pair_column=pair_column)
    _refuse_cut_json(batch, encoding, out, ("text", "text_pair", "label"))
    out["key"] = np.array([b"" if t is None else corpus.dedup_key(t) for t in _dedup_texts(out)],
                          dtype=object)
    return out


def clean_qa_batch(batch: dict, *, encoding: str, question_column: str, context_column: str,
                   settings: TextSettings, answers_column: str = "") -> dict:
    """Ray Data UDF (and the labeled sets' cleaner): raw QA rows -> question, context (with
    ``answers_column`` answers), text, reason, key (see :func:`xdistil_ray.tasks.qa.clean_rows`)."""
    tok = _tokenizer(settings.tokenizer_path)
    out = qa.clean_rows(_raw_rows(batch, encoding), source=encoding, labeled=bool(answers_column),
                        fits=lambda q, c: qa.window_problem(tok, q, c, settings.windows),
                        question_column=question_column, context_column=context_column,
                        answers_column=answers_column or "answers")
    _refuse_cut_json(batch, encoding, out, ("text", "question", "context", "answers"))
    out["key"] = corpus.object_array([b"" if t is None else corpus.dedup_key(t)
                                      for t in out["text"]])
    return out


def max_line_bytes(max_chars: int, fmt: str) -> int:
    """The bytes of a corpus line that reading keeps (:class:`readers.LinesDatasource`): a text
    line, enough for ``max_chars`` characters of any width and one more, so that a cut line is
    clipped and counted as truncated like any long one; a JSON line (escapes, other fields),
    16 times that."""
    return (4 * max_chars + 4) * (16 if fmt == "jsonl" else 1)


def _refuse_cut_json(batch: dict, encoding: str, out: dict, columns: tuple[str, ...]) -> None:
    """A JSON line cut by :func:`max_line_bytes` is no longer a whole object: counted as
    ``too_long`` (not ``bad_json``)."""
    if encoding != "jsonl" or "cut" not in batch or not np.any(batch["cut"]):
        return
    for i in np.flatnonzero(np.asarray(batch["cut"], dtype=bool)):
        out["reason"][i] = corpus.TOO_LONG
        for c in columns:
            if c in out:
                out[c][i] = None


def _raw_rows(batch: dict, encoding: str) -> list:
    """A Ray Data numpy batch as the cleaners take it: dict rows (``records``) or raw lines."""
    if encoding != "records":
        return list(batch["raw"])
    columns = list(batch)
    return [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]


def _dedup_texts(rows) -> list:
    """The text a row is deduplicated on: the sentence, or both sentences of a pair."""
    if "text_pair" not in rows:
        return list(rows["text"])
    return [None if t is None else t + corpus.PAIR_SEPARATOR + p
            for t, p in zip(rows["text"], rows["text_pair"])]


def drop_duplicates(block: pd.DataFrame) -> pd.DataFrame:
    """Ray Data UDF over one hash partition: keeps one row per dedup key."""
    return block.drop_duplicates(subset="key", keep="first")


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str):
    from xdistil_ray.modeling.models import load_tokenizer

    return load_tokenizer(path)


def tokenize_batch(batch: pd.DataFrame, *, settings: TextSettings) -> pa.Table:
    """Ray Data UDF: clean rows -> id, text, input_ids (int32, truncated), truncated, heldout;
    with ``text_pair`` also token_type_ids; with ``words`` (token tasks) word_ids (-1 for
    special tokens) and the words' tags."""
    tok = _tokenizer(settings.tokenizer_path)
    if "question" in batch:
        return _qa_windows(tok, batch, settings)
    if "words" in batch:
        ids, truncated, extra = _encode_words(tok, batch, settings)
    elif "text_pair" in batch:
        ids, truncated, extra = _encode_pairs(tok, batch, settings)
    else:
        ids, truncated, extra = _encode_texts(tok, batch, settings)
    keys = [bytes(k) for k in batch["key"]]
    columns = {
        "id": pa.array([corpus.row_id(k) for k in keys], pa.int64()),
        "text": pa.array(list(batch["text"]), pa.string()),
        "input_ids": pa.array(ids, pa.list_(pa.int32())),
        "truncated": pa.array(truncated, pa.bool_()),
        "heldout": pa.array([corpus.is_heldout(k, settings.heldout_fraction) for k in keys]),
        **extra,
    }
    if "label" in batch:
        columns["label"] = pa.array(list(batch["label"]), pa.string())
    return pa.table(columns)


def _encode_texts(tok, batch, settings: TextSettings):
    clipped = [corpus.clip_chars(t, settings.max_chars) for t in batch["text"]]
    encoded = tok([t for t, _ in clipped], add_special_tokens=True, truncation=False)["input_ids"]
    special = set(tok.all_special_ids)
    ids, truncated = [], []
    for (_, was_clipped), row in zip(clipped, encoded):
        row, cut = corpus.truncate_ids(row, settings.max_length, special)
        ids.append(np.asarray(row, dtype=np.int32))
        truncated.append(cut or was_clipped)
    return ids, truncated, {}


def _encode_pairs(tok, batch, settings: TextSettings):
    """Pairs: truncated longest-first, as the tokenizer does; token types kept."""
    first = [corpus.clip_chars(t, settings.max_chars) for t in batch["text"]]
    second = [corpus.clip_chars(t, settings.max_chars) for t in batch["text_pair"]]
    args = ([t for t, _ in first], [t for t, _ in second])
    full = tok(*args, truncation=False)["input_ids"]
    enc = tok(*args, truncation="longest_first", max_length=settings.max_length)
    truncated = [len(f) > settings.max_length or a[1] or b[1]
                 for f, a, b in zip(full, first, second)]
    ids = [np.asarray(r, dtype=np.int32) for r in enc["input_ids"]]
    types = enc.get("token_type_ids") or [[0] * len(r) for r in enc["input_ids"]]
    return ids, truncated, {"token_type_ids": pa.array(
        [np.asarray(t, dtype=np.int8) for t in types], pa.list_(pa.int8()))}


def _encode_words(tok, batch, settings: TextSettings):
    """Token tasks: words tokenized apart; word_ids map every token to its word (-1: special)."""
    enc = tok([list(w) for w in batch["words"]], is_split_into_words=True, truncation=False)
    special = set(tok.all_special_ids)
    ids, truncated, word_ids = [], [], []
    for i, row in enumerate(enc["input_ids"]):
        words = [-1 if w is None else w for w in enc.word_ids(i)]
        cut_row, cut = corpus.truncate_ids(row, settings.max_length, special)
        if cut:
            words = words[: len(cut_row) - 1] + [words[-1]]
        ids.append(np.asarray(cut_row, dtype=np.int32))
        word_ids.append(np.asarray(words, dtype=np.int32))
        truncated.append(cut)
    return ids, truncated, {
        "word_ids": pa.array(word_ids, pa.list_(pa.int32())),
        "tags": pa.array([list(t) for t in batch["tags"]], pa.list_(pa.string()))}


def _qa_windows(tok, batch: pd.DataFrame, settings: TextSettings) -> pa.Table:
    """Extractive QA: clean question/context rows -> one row per window: ``id`` (the window's),
    ``example`` (its question's row id), ``window`` (its index among them), ``text`` (the
    question), ``question``, ``context``, input_ids, token_type_ids, the context offsets of its
    tokens (``offset_start`` / ``offset_end``, :data:`xdistil_ray.tasks.qa.NO_OFFSET` outside the
    context), ``truncated`` (never: windows cover the context), ``heldout`` (its question's);
    labeled rows also ``start_position`` / ``end_position`` and the gold ``answers`` texts."""
    labeled = "answers" in batch
    questions, contexts = list(batch["question"]), list(batch["context"])
    answers = list(batch["answers"]) if labeled else None
    w = qa.encode_windows(tok, questions, contexts, answers, settings.windows)
    keys = [bytes(k) for k in batch["key"]]
    rows = w.get("row", [])
    types = w.get("token_type_ids") or [[0] * len(r) for r in w.get("input_ids", [])]
    seen: dict[int, int] = {}
    window_ids, index = [], []
    for r in rows:
        seen[r] = seen.get(r, -1) + 1
        index.append(seen[r])
        window_ids.append(corpus.row_id(corpus.dedup_key(f"{keys[r].hex()}:{seen[r]}")))
    int_lists = pa.list_(pa.int32())
    columns = {
        "id": pa.array(window_ids, pa.int64()),
        "example": pa.array([corpus.row_id(keys[r]) for r in rows], pa.int64()),
        "window": pa.array(index, pa.int32()),
        "text": pa.array([questions[r] for r in rows], pa.string()),
        "question": pa.array([questions[r] for r in rows], pa.string()),
        "context": pa.array([contexts[r] for r in rows], pa.string()),
        "input_ids": pa.array([np.asarray(i, dtype=np.int32) for i in w.get("input_ids", [])],
                              int_lists),
        "token_type_ids": pa.array([np.asarray(t, dtype=np.int8) for t in types],
                                   pa.list_(pa.int8())),
        "offset_start": pa.array([np.asarray(o, dtype=np.int32) for o in w.get("offset_start", [])],
                                 int_lists),
        "offset_end": pa.array([np.asarray(o, dtype=np.int32) for o in w.get("offset_end", [])],
                               int_lists),
        "truncated": pa.array([False] * len(rows), pa.bool_()),
        "heldout": pa.array([corpus.is_heldout(keys[r], settings.heldout_fraction)
                             for r in rows], pa.bool_()),
    }
    if labeled:
        columns["start_position"] = pa.array(w.get("start_position", []), pa.int32())
        columns["end_position"] = pa.array(w.get("end_position", []), pa.int32())
        columns["answers"] = pa.array([list(answers[r]["text"]) for r in rows],
                                      pa.list_(pa.string()))
    return pa.table(columns)


def _kept_rows(block: pd.DataFrame) -> pd.DataFrame:
    return block[block["reason"] == ""]


def _stage_clean(run: RunFolder, source: CorpusSource, name: str, *, text_column: str,
                 label_column: str | None, pair_column: str = "",
                 progress=None, qa_columns: tuple[str, str] = (),
                 settings: TextSettings | None = None) -> dict:
    """Reads and cleans one input into ``_staging/<name>``; returns its reject counts.
    ``qa_columns``: (question, context) columns of extractive QA rows instead of sentences."""
    import ray

    if qa_columns:
        columns = list(qa_columns)
        fn, kwargs = clean_qa_batch, dict(question_column=qa_columns[0],
                                          context_column=qa_columns[1], settings=settings)
    else:
        columns = [text_column] + [c for c in (pair_column, label_column) if c]
        fn, kwargs = clean_batch, dict(text_column=text_column, label_column=label_column,
                                       pair_column=pair_column or None)
    ds, encoding = read_raw(source, columns=columns,
                            max_line_bytes=max_line_bytes(settings.max_chars, source.fmt)
                            if settings is not None else 0)
    staging = run.path(_STAGING, name)
    run.delete(_STAGING, name)
    label = f"data: {name} read and cleaned"
    ray.get(progress.start.remote(label))
    ds.map_batches(counted, batch_size=4096, batch_format="numpy",
                   fn_kwargs=dict(fn=fn, progress=progress, label=label, encoding=encoding,
                                  **kwargs)
                   ).write_parquet(staging, filesystem=run.fs)
    ray.get(progress.finish.remote(label))
    counts: dict[str, int] = {}
    for batch in _column_batches(run, f"{_STAGING}/{name}", ["reason"]):
        for item in batch.column(0).value_counts().to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    input_rows = sum(counts.values())
    kept = counts.pop("", 0)
    return {"input_rows": input_rows, "clean": kept, "dropped": counts}


def _write_tokenized(run: RunFolder, ds, rel: str, settings: TextSettings,
                     rows_per_file: int | None, progress) -> list[dict]:
    import ray

    run.delete(rel)
    label = "data: corpus deduplicated and tokenized"
    ray.get(progress.start.remote(label))
    ds = ds.map_batches(counted, batch_size=1024, batch_format="pandas",
                        fn_kwargs=dict(fn=tokenize_batch, progress=progress, label=label,
                                       settings=settings))
    ds.write_parquet(run.path(rel), filesystem=run.fs, min_rows_per_file=rows_per_file)
    ray.get(progress.finish.remote(label))
    files = []
    for name, size in sorted(run.list_files(rel).items()):
        with run.fs.open_input_file(run.path(rel, name)) as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        files.append({"file": name, "rows": rows, "bytes": size})
    return files


def _column_batches(run: RunFolder, rel: str, columns: list[str]):
    """``columns`` of each parquet file under ``rel``, a record batch at a time.

    The data step's counts read the small columns they need here, in the driver: a Ray Data
    pass over the same files costs 2.5-10 s of start-up on a 2-CPU machine (its parquet
    datasource's listing task and footer actors; ``.venv/bin/python benchmarks/parquet_read.py``),
    where reading a column or two of the committed files takes milliseconds, and the driver never
    holds more than one batch of it."""
    for name in sorted(run.list_files(rel)):
        with run.fs.open_input_file(run.path(rel, name)) as f:
            yield from pq.ParquetFile(f).iter_batches(columns=columns, batch_size=65_536)


def _distinct_examples(run: RunFolder, rel: str) -> int:
    """QA questions under ``rel``: their first windows."""
    total = 0
    for batch in _column_batches(run, rel, ["window"]):
        total += int(pa.compute.sum(pa.compute.equal(batch.column(0), 0)).as_py() or 0)
    return total


def _sum_columns(run: RunFolder, rel: str, columns: list[str]) -> dict:
    """Sums of boolean/int ``columns`` over the committed files under ``rel`` (one read)."""
    sums = dict.fromkeys(columns, 0)
    for batch in _column_batches(run, rel, columns):
        for c in columns:
            sums[c] += int(pa.compute.sum(batch.column(c)).as_py() or 0)
    return sums


def prepare_corpus(run: RunFolder, source: CorpusSource | None, settings: TextSettings, *,
                   text_column: str, rows_per_shard: int,
                   pair_column: str = "", progress_every_s: float = 10.0,
                   qa_columns: tuple[str, str] = (), qa_labeled: CorpusSource | None = None,
                   exclude: frozenset = frozenset(), labeled_staged: int = 0) -> dict:
    """Cleans, deduplicates and tokenizes the transfer corpus into shards; returns its stats.

    Extractive QA (``qa_columns``: question, context): rows are questions, the shards hold their
    windows (``windows``; ``heldout`` and the shards' ``rows`` count windows); the labeled
    training set's questions (``qa_labeled``, their answers unread) join the corpus, less the
    dev set's questions (``exclude``: their row ids; dropped as ``dev_question``). Other tasks:
    ``labeled_staged`` rows of the labeled training set that :func:`prepare_labeled` staged
    join the corpus. Either way ``labeled_rows`` counts the rows (in ``input_rows``) that came
    from the labeled set."""
    import ray
    import ray.data

    progress = start_actor(progress_every_s)
    inputs = [(name, s) for name, s in (("corpus", source), ("labeled", qa_labeled)) if s]
    stats = {"input_rows": 0, "clean": 0, "dropped": {}, "labeled_rows": 0}
    for name, s in inputs:
        part = _stage_clean(run, s, name, text_column=text_column, label_column=None,
                            pair_column=pair_column, progress=progress,
                            qa_columns=qa_columns, settings=settings)
        stats["input_rows"] += part["input_rows"]
        stats["clean"] += part["clean"]
        for reason, n in part["dropped"].items():
            stats["dropped"][reason] = stats["dropped"].get(reason, 0) + n
        if name == "labeled":
            stats["labeled_rows"] = part["input_rows"]
    if labeled_staged:  # the labeled training rows, cleaned by prepare_labeled
        inputs.append(("labeled", None))
        stats["labeled_rows"] = labeled_staged
        stats["input_rows"] += labeled_staged
        stats["clean"] += labeled_staged
    num_partitions = max(1, math.ceil(stats["clean"] / rows_per_shard))
    kept = (ray.data.read_parquet([run.path(_STAGING, name) for name, _ in inputs],
                                  filesystem=run.fs)
            .map_batches(_kept_rows, batch_format="pandas", batch_size=None)
            .repartition(num_partitions, keys=["key"])
            .map_batches(drop_duplicates, batch_format="pandas", batch_size=None))
    if exclude:
        kept = kept.map_batches(_not_dev, batch_format="pandas", batch_size=None,
                                fn_kwargs=dict(exclude=exclude))
    shards = _write_tokenized(run, kept, CORPUS, settings, rows_per_shard, progress)
    ray.kill(progress)
    num_kept = sum(s["rows"] for s in shards)
    if qa_columns:
        stats["windows"] = num_kept
        num_kept = _distinct_examples(run, CORPUS)
    if exclude:  # each dev question is one of the training questions: once after dedup
        stats["dropped"][qa.DEV_QUESTION] = len(exclude)
        stats["clean"] -= len(exclude)
    stats["dropped"][corpus.DUPLICATE] = stats["clean"] - num_kept
    stats.update(kept=num_kept, shards=shards,
                 **_sum_columns(run, CORPUS, ["truncated", "heldout"]))
    del stats["clean"]
    return stats


def _not_dev(block: pd.DataFrame, exclude: frozenset) -> pd.DataFrame:
    """Ray Data UDF: the rows that are not the dev set's (by row id)."""
    return block[[corpus.row_id(bytes(k)) not in exclude for k in block["key"]]]


def prepare_labeled(run: RunFolder, sources: dict[str, CorpusSource], settings: TextSettings, *,
                    text_column: str, label_column: str, pair_column: str = "",
                    task: str = "sentence", dev_fraction: float = 0.0,
                    qa_columns: tuple[str, str, str] = (), transfer: bool = False) -> dict:
    """Cleans and tokenizes the labeled splits (small by nature: in this process, no Ray).

    Without a ``dev`` source, a ``dev_fraction`` share of the kept training rows (by a hash of
    the text: the same rows on every run) becomes the dev split, the rest the training split;
    none when either side would be empty. Extractive QA (``qa_columns``: question, context,
    answers): rows are questions, written as their windows (counted apart: ``windows``).

    With ``transfer`` (not QA, whose questions join the corpus by :func:`prepare_corpus`),
    the training split's rows (their text and second sentence; a token row's words joined) are
    staged to join the transfer set.

    Returns:
        {"splits": {split: stats}, "label_names": sorted labels (tags for token tasks; none
        for QA) of the training split (before the dev share is taken), with ``transfer``
        "staged": the rows staged for the transfer set}.
    """
    result: dict = {"splits": {}, "label_names": []}
    for split, source in sources.items():
        rows, kept, dropped = clean_split(split, source, settings, result, text_column=text_column,
                                          label_column=label_column, pair_column=pair_column,
                                          task=task, qa_columns=qa_columns)
        kept = kept.assign(key=[corpus.dedup_key(t) for t in _dedup_texts(kept)])
        share = None
        if split == "train" and "dev" not in sources and dev_fraction > 0:
            share = np.array([corpus.is_dev(k, dev_fraction) for k in kept["key"]], dtype=bool)
            share = share if 0 < share.sum() < len(share) else None
        if split == "train" and transfer and not qa_columns:
            result["staged"] = _stage_transfer(run, kept if share is None else kept[~share])
        if share is None:
            result["splits"][split] = _write_labeled(
                run, split, tokenize_batch(kept, settings=settings), len(rows), dropped)
            continue
        stats = _write_labeled(run, split, tokenize_batch(kept[~share], settings=settings),
                               len(rows), dropped)
        result["splits"]["train"] = {**stats, "to_dev": int(share.sum())}
        dev = _write_labeled(run, "dev", tokenize_batch(kept[share], settings=settings),
                             int(share.sum()), {})
        result["splits"]["dev"] = {**dev, "from_train": dev_fraction}
    return result


def clean_split(split: str, source: CorpusSource, settings: TextSettings, result: dict, *,
                text_column: str, label_column: str, pair_column: str, task: str,
                qa_columns: tuple = ()) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Reads and cleans one labeled split (the training split first: it sets
    ``result["label_names"]``); (every row, the kept rows, dropped counts by reason).

    Raises:
        ConfigError: when no row survives, or the training split has fewer than two labels,
            naming the split, its reasons, and the columns it was read with: found here, before
            the corpus pass, and by ``--dry-run``.
    """
    columns = list(qa_columns) or [text_column] + [c for c in (pair_column, label_column) if c]
    raw, encoding = load_records(source, columns=columns)
    rows = pd.DataFrame(_clean_labeled(raw, encoding, text_column, label_column, pair_column,
                                       task, qa_columns, settings))
    if rows.empty:
        rows = pd.DataFrame({"reason": pd.Series([], dtype=str)})
    dropped = rows["reason"][rows["reason"] != ""].value_counts().to_dict()
    kept = rows[rows["reason"] == ""]
    if not qa_columns and not kept.empty:
        kept = _known_labels(kept, split, task, result, dropped)
    field = f"labeled.{split}"
    if kept.empty:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) or "none"
        hint = (f" (columns read: {', '.join(columns)}; set labeled.text_column / "
                "labeled.label_column to the file's)" if corpus.MISSING_LABEL in dropped
                or corpus.MISSING_TEXT in dropped else "")
        unseen = (" (every label is one the training split does not have)"
                  if corpus.UNKNOWN_LABEL in dropped else "")
        raise ConfigError(f"{field}: no row survived cleaning ({len(rows)} rows in from "
                          f"{source.path!r}; dropped by reason: {reasons}){unseen}{hint}")
    if split == "train" and task_of(task).head == "sequence" and not qa_columns \
            and len(result["label_names"]) < 2:
        raise ConfigError(f"{field}: needs at least 2 classes, found {result['label_names']}")
    return rows, kept, dropped


def check_labeled(sources: dict[str, CorpusSource], settings: TextSettings, *, text_column: str,
                  label_column: str, pair_column: str = "", task: str = "sentence",
                  qa_columns: tuple = ()) -> dict[str, int]:
    """What :func:`prepare_labeled` would keep of each split, without writing anything (the dry
    run's check); raises its ConfigErrors."""
    result: dict = {"splits": {}, "label_names": []}
    return {split: len(clean_split(split, source, settings, result, text_column=text_column,
                                   label_column=label_column, pair_column=pair_column,
                                   task=task, qa_columns=qa_columns)[1])
            for split, source in sources.items()}


def _stage_transfer(run: RunFolder, kept: pd.DataFrame) -> int:
    """Stages labeled training rows as the corpus's cleaner stages its rows (text, [second
    sentence,] reason, dedup key), so that they join the transfer set; returns their count."""
    columns = {"text": pa.array(list(kept["text"]), pa.string())}
    if "text_pair" in kept:
        columns["text_pair"] = pa.array(list(kept["text_pair"]), pa.string())
    columns["reason"] = pa.array([""] * len(kept), pa.string())
    columns["key"] = pa.array([bytes(k) for k in kept["key"]], pa.binary())
    run.delete(_STAGING, "labeled")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    run.write_bytes(f"{_STAGING}/labeled/part-0.parquet", sink.getvalue().to_pybytes())
    return len(kept)


def _known_labels(kept: pd.DataFrame, split: str, task: str, result: dict,
                  dropped: dict) -> pd.DataFrame:
    """The rows whose labels the training split has (which sets ``result["label_names"]``);
    the others counted as dropped."""
    shape = task_of(task)
    column = shape.label_column  # the cleaned rows' column: a label, or a word's tags
    labels_of = (lambda r: r[column]) if shape.per_word else (lambda r: [r[column]])
    if split == "train":
        result["label_names"] = sorted({t for _, r in kept.iterrows() for t in labels_of(r)})
    names = set(result["label_names"])
    known = pd.Series([set(labels_of(r)) <= names for _, r in kept.iterrows()],
                      index=kept.index, dtype=bool)
    if (~known).any():
        dropped[corpus.UNKNOWN_LABEL] = int((~known).sum())
    return kept[known]


def _clean_labeled(raw, encoding, text_column, label_column, pair_column, task,
                   qa_columns=(), settings: TextSettings | None = None) -> dict:
    if qa_columns:
        tok = _tokenizer(settings.tokenizer_path)
        question, context, answers = qa_columns
        return qa.clean_rows(raw, source=encoding, labeled=True,
                             fits=lambda q, c: qa.window_problem(tok, q, c, settings.windows),
                             question_column=question, context_column=context,
                             answers_column=answers)
    if task_of(task).per_word:
        return corpus.clean_token_rows(raw, source=encoding, words_column=text_column,
                                       tags_column=label_column)
    return corpus.clean_rows(raw, source=encoding, text_column=text_column,
                             label_column=label_column, pair_column=pair_column or None)


def _write_labeled(run: RunFolder, split: str, table: pa.Table, input_rows: int,
                   dropped: dict) -> dict:
    rel = f"{LABELED}/{split}"
    run.delete(rel)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    run.write_bytes(f"{rel}/{split}.parquet", sink.getvalue().to_pybytes())
    stats = {"input_rows": input_rows, "kept": table.num_rows,
             "dropped": {k: int(v) for k, v in dropped.items()},
             "truncated": int(pa.compute.sum(table.column("truncated")).as_py() or 0),
             "files": [{"file": f"{split}.parquet", "rows": table.num_rows,
                        "bytes": run.list_files(rel)[f"{split}.parquet"]}]}
    if "window" in table.column_names:  # QA: rows are questions, the table their windows
        first = pa.compute.equal(table.column("window"), 0)
        stats.update(kept=int(pa.compute.sum(first).as_py() or 0), windows=table.num_rows)
    return stats


def run_step(run: RunFolder, corpus_source: CorpusSource | None,
             labeled_sources: dict[str, CorpusSource], settings: TextSettings, *,
             text_column: str, label_column: str, labeled_text_column: str, rows_per_shard: int, fingerprint: dict, pair_column: str = "",
             labeled_pair_column: str = "", task: str = "sentence", dev_fraction: float = 0.0,
             progress_every_s: float = 10.0, qa_columns: tuple[str, str, str] = (),
             with_labeled: bool = True, start_ray=lambda: None) -> DataMarker:
    """Runs the step and commits ``data/``; returns the marker. The transfer set is
    ``corpus_source`` (may be None) and, ``with_labeled``, the labeled training rows (less a
    dev share carved from them); extractive QA (``qa_columns``: question, context, answers):
    the training set's questions. The labeled splits are read and checked on the driver;
    ``start_ray`` is called after them, before the corpus pass (a refused split starts no
    Ray)."""
    start = time.time()
    labeled = {"splits": {}, "label_names": []}
    if labeled_sources:
        labeled = prepare_labeled(run, labeled_sources, settings, text_column=labeled_text_column,
                                  label_column=label_column, pair_column=labeled_pair_column,
                                  task=task, dev_fraction=dev_fraction, qa_columns=qa_columns,
                                  transfer=with_labeled)
    exclude: frozenset = frozenset()
    dev = labeled["splits"].get("dev")
    if qa_columns and dev and dev.get("from_train"):  # the carved dev questions stay out
        exclude = frozenset(pq.read_table(run.path(f"{LABELED}/dev", dev["files"][0]["file"]),
                                          columns=["example"], filesystem=run.fs)
                            .column(0).to_pylist())
    start_ray()
    stats = prepare_corpus(run, corpus_source, settings, text_column=text_column,
                           rows_per_shard=rows_per_shard,
                           pair_column=pair_column, progress_every_s=progress_every_s,
                           qa_columns=qa_columns[:2],
                           qa_labeled=labeled_sources.get("train")
                           if qa_columns and with_labeled else None,
                           exclude=exclude, labeled_staged=labeled.pop("staged", 0))
    log.debug("corpus: %d rows in, %d kept, dropped %s, %d truncated", stats["input_rows"],
             stats["kept"], stats["dropped"], stats["truncated"])
    run.delete(_STAGING)
    return run.commit(STEP, DataMarker(
        corpus=markers.build(CorpusStats, stats), labeled=markers.build(LabeledData, labeled),
        pairs=bool(pair_column or qa_columns), task=task, fingerprint=fingerprint,
        seconds=round(time.time() - start, 1)))


class DataStep(Step):
    """``data/``: the corpus and the labeled splits, cleaned, deduplicated and tokenized with
    the teacher's tokenizer; the corpus in shards (the teacher step's unit of work)."""

    name = folder = STEP
    marker_kind = DataMarker
    keys = ("seed", "task", "corpus.path", "corpus.text_column", "corpus.text_pair_column",
            "corpus.hf_split", "corpus.max_length", "corpus.max_chars", "corpus.rows_per_shard",
            "corpus.heldout_fraction", "corpus.with_labeled", "labeled", "teacher.model")

    def run(self, ctx: Context, fp: dict) -> DataMarker:
        cfg, inputs = ctx.cfg, ctx.inputs
        pairs = task_of(cfg.task).pairs
        return run_step(ctx.run, inputs.corpus, inputs.labeled, text_settings(cfg, inputs),
                        text_column=cfg.corpus.text_column, label_column=cfg.labeled.label_column,
                        labeled_text_column=cfg.labeled.text_column,
                        rows_per_shard=cfg.corpus.rows_per_shard, fingerprint=fp,
                        pair_column=cfg.corpus.text_pair_column if pairs else "",
                        labeled_pair_column=cfg.labeled.text_pair_column if pairs else "",
                        task=cfg.task, dev_fraction=cfg.labeled.dev_fraction,
                        progress_every_s=cfg.progress_every_s, qa_columns=qa_columns(cfg),
                        with_labeled=cfg.corpus.with_labeled, start_ray=ctx.start_ray)

    def use(self, ctx: Context, marker: DataMarker | None) -> None:
        ctx.start_ray()  # done already where the step ran its corpus pass
        ctx.set_data(marker)

    def plan(self, ctx: Context) -> list[Planned]:
        cfg, inputs = ctx.cfg, ctx.inputs
        data = ctx.run.marker(self.folder, DataMarker)
        reads = ([f"corpus.path: {describe(inputs.corpus, cfg.corpus.path)}"]
                 if cfg.corpus.path else [])
        reads += [f"labeled.{split}: {describe(src, getattr(cfg.labeled, split))}"
                  for split, src in inputs.labeled.items()]
        detail = ""
        if data is not None:
            c = data.corpus
            detail = f"{c.kept} sentences kept of {c.input_rows}, {len(c.shards)} shards"
        else:
            kept = check_labeled_inputs(cfg, inputs)
            if kept:
                detail = "labeled rows that clean: " + ", ".join(f"{k} {v}"
                                                                 for k, v in kept.items())
        return [Planned(self.name, self.folder, self.state(ctx), reads,
                        "Ray Data: CPU tasks (1 CPU each) across the cluster", detail)]


def text_settings(cfg, inputs) -> TextSettings:
    return TextSettings(inputs.teacher_path, cfg.corpus.max_length, cfg.corpus.max_chars,
                        cfg.corpus.heldout_fraction, cfg.windows())


def qa_columns(cfg) -> tuple[str, ...]:
    q = cfg.qa
    return ((q.question_column, q.context_column, q.answers_column)
            if task_of(cfg.task).spans else ())


def check_labeled_inputs(cfg, inputs) -> dict[str, int]:
    """The rows the step would keep of each labeled split (the dry run's check; embedded
    splits, not generated by a dry run, are left out). Raises ConfigError as the step would."""
    sources = {k: v for k, v in inputs.labeled.items() if v is not None}
    if "train" not in sources:  # none, or only dev: its labels are checked against train's
        return {}
    return check_labeled(
        sources, text_settings(cfg, inputs), text_column=cfg.labeled.text_column,
        label_column=cfg.labeled.label_column,
        pair_column=cfg.labeled.text_pair_column if task_of(cfg.task).pairs else "",
        task=cfg.task,
        qa_columns=qa_columns(cfg))
