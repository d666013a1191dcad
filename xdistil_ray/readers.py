"""Finding corpus files and reading them as Ray Datasets of raw rows.

Files are read as raw bytes lines (text and JSON Lines) so that a bad byte costs only its own
line, never the rest of the file; decoding happens in :mod:`xdistil_ray.corpus`.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
from ray.data.datasource import FileBasedDatasource

from xdistil_ray import storage
from xdistil_ray.config import ConfigError

SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_LINES_PER_BLOCK = 8192


@dataclass(frozen=True)
class CorpusSource:
    """Resolved input: ``kind`` is ``files`` (with ``files`` and their ``fmt``), ``hf_disk``
    (a `datasets.save_to_disk` folder) or ``hf_hub`` (a hub id in ``path``)."""

    kind: str
    path: str
    files: tuple[str, ...] = ()
    fmt: str = ""
    fs: Any = None
    """pyarrow filesystem of ``files`` (object storage); None = local files."""


def resolve_source(path: str, field: str,
                   options: storage.StorageOptions | None = None) -> CorpusSource:
    """Finds the files behind a corpus path; raises ConfigError naming ``field`` if none.

    Accepts a file, a folder (its .txt/.jsonl/.parquet files, recursively), a glob, a folder
    written by `datasets.save_to_disk`, ``hf:<hub id>``, or an ``s3://bucket/key`` file or
    prefix (read with the run's storage settings and the standard AWS credentials).
    """
    if path.startswith("hf:"):
        return CorpusSource("hf_hub", path[3:])
    if storage.is_remote(path):
        return _resolve_remote(path, field, options or storage.StorageOptions())
    if os.path.isdir(path) and (os.path.exists(os.path.join(path, "dataset_info.json"))
                                or os.path.exists(os.path.join(path, "dataset_dict.json"))):
        return CorpusSource("hf_disk", path)
    if os.path.isdir(path):
        candidates = glob.glob(os.path.join(path, "**", "*"), recursive=True)
    elif glob.has_magic(path):
        candidates = glob.glob(path, recursive=True)
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise ConfigError(f"{field}: {path!r} does not exist")
    files = sorted(os.path.abspath(p) for p in candidates
                   if os.path.isfile(p) and _suffix(p) in SUFFIXES)
    return _files_source(path, field, files, None)


def _files_source(path: str, field: str, files: list[str], fs) -> CorpusSource:
    if not files:
        raise ConfigError(f"{field}: {path!r} matches no .txt, .jsonl or .parquet file")
    formats = {SUFFIXES[_suffix(p)] for p in files}
    if len(formats) > 1:
        raise ConfigError(f"{field}: {path!r} mixes file formats {sorted(formats)}; use one")
    return CorpusSource("files", path, tuple(files), formats.pop(), fs)


def _resolve_remote(path: str, field: str, options: storage.StorageOptions) -> CorpusSource:
    """A file or a prefix (its files, recursively) in object storage."""
    storage.check_access(path, options, field, write=False)
    fs, root = storage.filesystem(path, options)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        candidates = [root]
    elif info.type == pafs.FileType.Directory:
        candidates = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                      if i.type == pafs.FileType.File]
    else:
        raise ConfigError(f"{field}: {path!r} does not exist")
    files = sorted(p for p in candidates if _suffix(p) in SUFFIXES
                   and not posixpath.basename(p).startswith("."))
    return _files_source(path, field, files, fs)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def read_raw(source: CorpusSource, *, text_column: str, columns: list[str], hf_split: str):
    """Reads a resolved source as a Ray Dataset of raw rows.

    Returns:
        (dataset, encoding): ``encoding`` tells :func:`xdistil_ray.corpus.clean_rows` how the
        ``raw`` column is encoded (``txt``, ``jsonl`` or ``records``).
    """
    import ray.data

    squad = squad_records(source, columns)
    if squad is not None:
        return ray.data.from_items(squad), "records"
    if source.kind == "files" and source.fmt in ("txt", "jsonl"):
        return (ray.data.read_datasource(LinesDatasource(list(source.files), source.fs)),
                source.fmt)
    if source.kind == "files":
        ds = ray.data.read_parquet(list(source.files), filesystem=source.fs)
    else:
        ds = ray.data.from_huggingface(_load_hf(source, hf_split))
    missing = [c for c in columns if c not in ds.columns()]
    if missing:
        raise ConfigError(f"{source.path}: has no column {missing[0]!r}; columns: {ds.columns()}")
    return ds.select_columns(columns), "records"


def load_records(source: CorpusSource, *, columns: list[str], split: str) -> tuple[list, str]:
    """Reads a small input (a labeled set) into memory, without Ray.

    Returns:
        (rows, encoding) as :func:`xdistil_ray.corpus.clean_rows` takes them.
    """
    if source.kind == "files" and source.fmt == "txt":
        raise ConfigError(f"{source.path}: labeled data needs .jsonl, .parquet or a dataset "
                          "with text and label columns, not .txt")
    squad = squad_records(source, columns)
    if squad is not None:
        return squad, "records"
    if source.kind == "files" and source.fmt == "jsonl":
        lines: list[bytes] = []
        fs = source.fs or pafs.LocalFileSystem()
        for path in source.files:
            with fs.open_input_stream(path) as f:
                data = f.read()
            lines.extend(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"))
        return lines, "jsonl"
    if source.kind == "files":
        import pyarrow.parquet as pq

        tables = [pq.read_table(p, filesystem=source.fs) for p in source.files]
        rows = [r for t in tables for r in t.to_pylist()]
    else:
        rows = list(_load_hf(source, split))
    if rows and any(c not in rows[0] for c in columns):
        missing = [c for c in columns if c not in rows[0]]
        raise ConfigError(f"{source.path}: has no column {missing[0]!r}; columns: {list(rows[0])}")
    return [{c: r.get(c) for c in columns} for r in rows], "records"


def squad_records(source: CorpusSource, columns: list[str]) -> list[dict] | None:
    """The rows (``columns`` of each) of official SQuAD ``.json`` files (one JSON document of
    nested ``data/paragraphs/qas``); None when the source's files are not such documents.

    Raises:
        ConfigError: a ``.json`` file with a top-level ``data`` list that is not SQuAD's
            layout, or SQuAD files mixed with other files.
    """
    from xdistil_ray import qa

    if source.kind != "files" or source.fmt != "jsonl":
        return None
    fs = source.fs or pafs.LocalFileSystem()
    rows: list[dict] = []
    others = []
    for path in source.files:
        doc = _json_document(fs, path) if _suffix(path) == ".json" else None
        if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
            others.append(path)
            continue
        try:
            rows.extend({c: r.get(c) for c in columns} for r in qa.squad_rows(doc))
        except qa.NotSquad as e:
            raise ConfigError(f"{source.path}: {path}: {e}") from None
    if not rows and len(others) == len(source.files):
        return None
    if others:
        raise ConfigError(f"{source.path}: mixes SQuAD .json files with other files "
                          f"({others[0]}); give one kind")
    return rows


def _json_document(fs, path: str, peek: int = 1 << 20):
    """The JSON document in ``path``, or None for JSON Lines (a first line that parses alone
    as a row) and for files that do not parse: only a file that is one document is read whole."""
    with fs.open_input_stream(path) as f:
        head = f.read(peek)
    first = head.split(b"\n", 1)[0]
    try:
        row = json.loads(first)
        if not (isinstance(row, dict) and "data" in row) or len(first) < len(head.rstrip()):
            return None  # a row of JSON Lines (a one-line document is the whole file)
        return row
    except ValueError:
        pass
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError:
        return None


def _load_hf(source: CorpusSource, split: str):
    import datasets

    if source.kind == "hf_disk":
        data = datasets.load_from_disk(source.path)
    else:
        data = datasets.load_dataset(source.path, split=split)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(f"{source.path}: no split {split!r}; splits: {list(data)}")
        data = data[split]
    return data


class LinesDatasource(FileBasedDatasource):
    """Reads files as raw byte lines: column ``raw`` (binary), split on ``\\n`` only."""

    def __init__(self, paths: list[str], filesystem=None):
        super().__init__(paths, filesystem=filesystem)

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        lines: list[bytes] = []
        tail = b""
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            parts = (tail + chunk).split(b"\n")
            tail = parts.pop()
            lines.extend(parts)
            if len(lines) >= _LINES_PER_BLOCK:
                yield pa.table({"raw": pa.array(lines, pa.large_binary())})
                lines = []
        if tail:  # a last line without a newline is still a line
            lines.append(tail)
        if lines:
            yield pa.table({"raw": pa.array(lines, pa.large_binary())})
